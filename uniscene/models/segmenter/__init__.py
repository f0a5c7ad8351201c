"""The segmentation network of the video metrics: trained on the synthetic dataset's true images and classes
(`uniscene train-segmenter`), it reads the class of every pixel of generated frames (condition consistency)."""
