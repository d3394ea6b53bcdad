"""The data stages: archives, downloads, the converted store and its writer, Deep Lake in and out, and the normalised window sources models read."""
