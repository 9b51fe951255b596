"""The store: manifest reading, OME-Zarr layout, Parquet tables, all versioned."""
