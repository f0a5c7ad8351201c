"""BEV layouts: rasterising map layers and boxes (`raster`), and editing them by hand (`edit`)."""
