"""The DICOM objects glioma-node sends back: SEG, Parametric Maps, a TID 1500 SR and a
summary Secondary Capture, one module per kind of object (see docs/dicom-outputs.md).

:func:`glioma_node.dicom_io.results.writer.write_results` writes all of them for one study.
"""
