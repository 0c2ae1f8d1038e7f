"""Follow-up studies as arrays: measure lesions (RANO's bidimensional products and volumes),
match them across time points, and call the response (RANO 2.0, RANO-LGG). Pure functions
of arrays and :mod:`glioma_node.core.longitudinal` values; nothing here reads files or
queries a PACS."""
