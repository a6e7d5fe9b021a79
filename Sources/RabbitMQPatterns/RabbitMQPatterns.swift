// Placeholder until the patterns land (issue 4).
