"""Data (layer 3, nothing here trains): sources, columns and builtin sets; chat formats, templates and encoding;
splits, cleaning, augmentation, balancing and packing; images/; the data report and the rows left out."""
