"""sendtime's serving layer: the Flask API over the online store."""
