"""Everything that goes out: JSON records, atomic writes, CSV, NIfTI, the HTML report, names, a folder's manifest."""
