"""Test data for the OHIF end-to-end test (crates/haneul/tests/ohif_e2e.rs).

Writes into OUT_DIR:
  ct/        a CT series of SLICES slices made from pydicom's CT_small.dcm
             (new study/series/frame-of-reference UIDs, InstanceNumber,
             ImagePositionPatient and SliceLocation along the slice normal,
             pixel values raised a little per slice so that slices differ);
  other/     chrKoreanMulti.dcm (Korean name in ISO 2022 IR 149) and
             chrI2.dcm (Hong^Gildong=洪^吉洞=홍^길동), unchanged;
  expected.json  what the study list must show: study UID, the patient name
             as pydicom decodes it, modality, instance count.

usage: python make_data.py OUT_DIR
"""

import json
import os
import shutil
import sys

import numpy as np
import pydicom
from pydicom.uid import generate_uid

SLICES = 12
PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root

out = sys.argv[1]
data = os.path.join(os.path.dirname(pydicom.__file__), "data")
os.makedirs(os.path.join(out, "ct"), exist_ok=True)
os.makedirs(os.path.join(out, "other"), exist_ok=True)

source = pydicom.dcmread(os.path.join(data, "test_files", "CT_small.dcm"))
study_uid = generate_uid(PREFIX, entropy_srcs=["haneul-ohif-e2e", "study"])
series_uid = generate_uid(PREFIX, entropy_srcs=["haneul-ohif-e2e", "series"])
frame_uid = generate_uid(PREFIX, entropy_srcs=["haneul-ohif-e2e", "frame"])
spacing = float(source.SliceThickness)
origin = [float(v) for v in source.ImagePositionPatient]
pixels = source.pixel_array
for i in range(SLICES):
    ds = source.copy()
    sop_uid = generate_uid(PREFIX, entropy_srcs=["haneul-ohif-e2e", "slice", str(i)])
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.StudyID = "OHIF1"
    ds.AccessionNumber = "OHIF-CT-1"
    ds.StudyDescription = "OHIF e2e CT"
    ds.SeriesDescription = "Axial 5mm"
    ds.InstanceNumber = i + 1
    # The orientation is axial (1,0,0 / 0,1,0): the normal is +z.
    ds.ImagePositionPatient = [origin[0], origin[1], round(origin[2] + i * spacing, 6)]
    ds.SliceLocation = round(float(source.SliceLocation) + i * spacing, 6)
    # Slices differ a little: tissue 4 HU denser per slice (padding stays).
    padding = pixels == source.PixelPaddingValue
    ds.PixelData = np.where(padding, pixels, pixels + 4 * i).astype(pixels.dtype).tobytes()
    ds.save_as(os.path.join(out, "ct", f"ct{i + 1:03}.dcm"), enforce_file_format=True)

studies = [
    {
        "studyInstanceUid": study_uid,
        "patientName": str(source.PatientName),
        "modality": "CT",
        "instances": SLICES,
        "description": "OHIF e2e CT",
    }
]
for name in ["chrKoreanMulti.dcm", "chrI2.dcm"]:
    path = os.path.join(data, "charset_files", name)
    shutil.copy(path, os.path.join(out, "other", name))
    ds = pydicom.dcmread(path)
    studies.append(
        {
            "studyInstanceUid": ds.StudyInstanceUID,
            # The alphabetic group, as OHIF's study list shows names.
            "patientName": ds.PatientName.alphabetic,
            "fullPatientName": str(ds.PatientName),
            "modality": ds.Modality,
            "instances": 1,
        }
    )

korean = next(s for s in studies if any("\uac00" <= c <= "\ud7a3" for c in s["patientName"]))
expected = {"studies": studies, "ctStudyUid": study_uid, "ctSeriesUid": series_uid, "koreanName": korean["patientName"]}
with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
    json.dump(expected, f, ensure_ascii=False, indent=2)
print(json.dumps(expected, ensure_ascii=False))
