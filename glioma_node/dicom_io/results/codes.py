"""Every coded concept glioma-node puts into its DICOM objects, with where it was checked.

Codes from DICOM's own tables (SCT, DCM, NCIt, LN, UCUM) were checked against PS3.16 as
pydicom's concept dictionary carries it (``pydicom.sr._concepts_dict``; the context
groups are named per code). The MGMT and IDH values are NCI Thesaurus concepts that
DICOM does not list (checked against NCIt as ontologies using it cite it). DICOM and
NCIt have no concept *names* for "MGMT promoter methylation status", "IDH mutation
status", the survival risk group or a Cox risk score, so those use glioma-node's private
coding scheme ``99GLIOMA`` (PS3.16 8.1: private designators start with ``99``),
declared in every SR's Coding Scheme Identification Sequence and listed in
docs/dicom-outputs.md.
"""
from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99GLIOMA"
PRIVATE_SCHEME_NAME = "glioma-node private codes"
PRIVATE_SCHEME_RESPONSIBLE = "glioma-node project (see docs/dicom-outputs.md)"


def _private(value: str, meaning: str) -> Code:
    return Code(value, PRIVATE_SCHEME, meaning)


# SEG: segmented property category and types (CID 7150, CID 7151 / 7159)
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")  # CID 7150
NECROSIS = Code("6574001", "SCT", "Necrosis")  # CID 7151
EDEMA = Code("79654002", "SCT", "Edema")  # CID 7151
ENHANCING_LESION = Code("C113842", "NCIt", "Enhancing Lesion")  # CID 7151
NON_ENHANCING_LESION = Code("C81175", "NCIt", "Non-Enhancing Lesion")  # CID 7151
NEOPLASM = Code("108369006", "SCT", "Neoplasm")  # CID 7151
BRAIN = Code("12738006", "SCT", "Brain")  # CID 4, anatomic region
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")  # CID 7162, algorithm family

# IHE AI Results: purpose of reference of the Contributing Equipment Sequence item
PROCESSING_ALGORITHM = Code("Newcode1", "99IHE", "Processing Algorithm")
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")  # CID 7005

# SR (TID 1500 and TID 1501)
BRAIN_MRI = Code("24590-2", "LN", "Brain MRI")  # CID 646; procedure reported
COMMENT = Code("121106", "DCM", "Comment")  # TEXT in TID 1500's Qualitative Evaluations: data warnings
VOLUME = Code("118565006", "SCT", "Volume")
MILLILITER = Code("ml", "UCUM", "milliliter")
AREA = Code("42798000", "SCT", "Area")  # CID 7469
LONG_AXIS = Code("103339001", "SCT", "Long axis")  # CID 7469 / 7470
SQUARE_MILLIMETER = Code("mm2", "UCUM", "square millimeter")  # CID 7181
MILLIMETER = Code("mm", "UCUM", "mm")  # CID 7181
NO_UNITS = Code("1", "UCUM", "no units")  # CID 7181
PROBABILITY = Code("122157", "DCM", "Probability")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 12
HIGH_RISK = Code("15508007", "SCT", "High risk")  # CID 3118
LOW_RISK = Code("75976002", "SCT", "Low risk")  # CID 3118
MGMT_METHYLATED = Code("C153562", "NCIt", "MGMT Gene Promoter Methylation")
MGMT_UNMETHYLATED = Code("C132892", "NCIt", "Unmethylated MGMT Gene Promoter")
GENE_MUTATION = Code("C18093", "NCIt", "Gene Mutation")
WILD_TYPE = Code("C62195", "NCIt", "Wild Type")

MGMT_STATUS = _private("GN0001", "MGMT promoter methylation status")
IDH_STATUS = _private("GN0002", "IDH mutation status")
RISK_GROUP = _private("GN0003", "Survival risk group")
COX_RISK_SCORE = _private("GN0004", "Cox risk score (log relative hazard)")
DECISION_THRESHOLD = _private("GN0005", "Decision threshold")
RISK_CUTOFF = _private("GN0006", "Risk group cutoff")
GRAD_CAM = _private("GN0007", "Grad-CAM relevance")
CHEMO_BENEFIT = _private("GN0008", "Chemotherapy benefit (overall survival >= 24 months)")
RISK_INPUT = _private("GN0009", "Risk model input and its source")
SEGMENTATION_QUALITY = _private("GN0010", "Segmentation quality")
SEGMENTATION_DOUBTFUL = _private("GN0011", "Segmentation doubtful")
SEGMENTATION_PLAUSIBLE = _private("GN0012", "Segmentation plausible")
QUALITY_SCORE = _private("GN0013", "Segmentation quality score")
QUALITY_REASON = _private("GN0014", "Reason the segmentation is doubtful")
RESPONSE_MINOR = _private("GN0015", "Minor response (RANO-LGG)")
RESPONSE_NOT_EVALUABLE = _private("GN0016", "Response not evaluable")
RESPONSE_STATUS = _private("GN0017", "Response status")
RESPONSE_PRELIMINARY = _private("GN0018", "Preliminary (awaiting a confirming scan)")
RESPONSE_CONFIRMED = _private("GN0019", "Confirmed by a later scan")
RESPONSE_REASON = _private("GN0020", "Reason for the response call")
BIDIMENSIONAL_PRODUCT = _private("GN0021", "Product of perpendicular diameters")
SUM_OF_PRODUCTS = _private("GN0022", "Sum of products of perpendicular diameters")
CHANGE_SUM_OF_PRODUCTS = _private("GN0023", "Change in sum of products")
CHANGE_COMPONENT_VOLUME = _private("GN0024", "Change in the measured component's volume")
LESION_ROLE = _private("GN0025", "RANO lesion role")
TARGET_LESION = _private("GN0026", "Target lesion")
NON_TARGET_LESION = _private("GN0027", "Non-target lesion")
NEW_LESION = _private("GN0028", "New lesion")
REGION_VOLUME_CHANGE = _private("GN0029", "Volume change since the prior study")
RESPONSE_COMPONENT = _private("GN0030", "Tumour component the response is measured on")
BASELINE_STUDY = _private("GN0031", "Baseline study of the response")
PRIOR_STUDY = _private("GN0032", "Prior study compared with")
PRESENT = Code("52101004", "SCT", "Present")  # CID 240
ABSENT = Code("272519000", "SCT", "Absent")  # CID 240

#: what each prediction target's status concept name and values are
STATUS = {
    "mgmt": (MGMT_STATUS, {"methylated": MGMT_METHYLATED, "unmethylated": MGMT_UNMETHYLATED}),
    "idh": (IDH_STATUS, {"mutant": GENE_MUTATION, "wildtype": WILD_TYPE}),
    "chemo-benefit": (CHEMO_BENEFIT, {"benefit": PRESENT, "no benefit": ABSENT}),
}
RISK = {"high": HIGH_RISK, "low": LOW_RISK}

# Follow-up studies: TID 1501 per lesion with TID 1502's time point context, and the RANO call.
PERPENDICULAR_AXIS = Code("131189007", "SCT", "Perpendicular Axis")  # CID 7469
FINDING = Code("121071", "DCM", "Finding")
PERCENT = Code("%", "UCUM", "Percent")  # CID 7181
RESPONSE_EVALUATION = Code("112020", "DCM", "Response Evaluation")
RESPONSE_EVALUATION_METHOD = Code("112021", "DCM", "Response Evaluation Method")
RANO = Code("C114879", "NCIt", "RANO")  # CID 6147 Response Criteria
#: time point type (CID 6146) per core.longitudinal.TimePointKind value
TIME_POINT_TYPE = {
    "baseline": Code("C1442488", "UMLS", "Baseline"),
    "post-operative": Code("262061000", "SCT", "Post-operative"),
    "follow-up": Code("126074", "DCM", "Posttreatment"),
}
#: response call per core.longitudinal.ResponseCategory value (CID 6144 where DICOM has one)
RESPONSE = {
    "complete response": Code("112041", "DCM", "Target Lesion Complete Response"),
    "partial response": Code("112042", "DCM", "Target Lesion Partial Response"),
    "progressive disease": Code("112043", "DCM", "Target Lesion Progressive Disease"),
    "stable disease": Code("112044", "DCM", "Target Lesion Stable Disease"),
    "minor response": RESPONSE_MINOR,
    "not evaluable": RESPONSE_NOT_EVALUABLE,
}
RESPONSE_STATUS_VALUE = {"preliminary": RESPONSE_PRELIMINARY, "confirmed": RESPONSE_CONFIRMED}
#: the component's finding type per core.longitudinal.Component value
COMPONENT = {"enhancing": ENHANCING_LESION, "non-enhancing": NON_ENHANCING_LESION}


def coding_scheme_identification() -> Dataset:
    """The Coding Scheme Identification Sequence item that declares ``99GLIOMA``."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = PRIVATE_SCHEME_RESPONSIBLE
    return item
