"""`glioma-node train radiogenomics`: dataset adapters, feature tables, fitting, evaluation."""
