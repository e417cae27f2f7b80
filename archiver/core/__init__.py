"""Foundation: errors, units, logging, retries, stops, private files, process tuning."""
