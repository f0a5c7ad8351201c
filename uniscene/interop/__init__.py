"""Reading and writing other tools' file formats (mmdet3d info files)."""
