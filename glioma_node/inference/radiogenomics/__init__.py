"""Radiogenomics: MGMT and IDH from fused radiomics and deep features, a Cox risk group,
Grad-CAM heat maps and SHAP attributions. Pure functions of arrays and model files."""
