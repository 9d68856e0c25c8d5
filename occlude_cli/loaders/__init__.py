"""What comes in: the model session and heads, images, DICOM and NIfTI volumes, maps and masks, the memory budget."""
