"""Analysis of trained nets: layer probes (Table 3), feature extraction, net surgery, sentiment maps."""
