"""Test data for the built-in viewer's browser test (crates/haneul/tests/viewer_e2e.rs).

Writes into OUT_DIR (Part 10 files, Explicit VR Little Endian):
  main/   patient 김^민준 (ISO_IR 192):
            a CT phantom of SLICES slices, 256×256 signed 16-bit, Rescale
            Intercept -1024, Pixel Spacing 0.5 mm: air, a water body
            (radius 55 mm) and a disc of DISC_HU (diameter DISC_MM) in the
            middle; a small bright marker (1000 HU) whose column moves with the
            slice, so a test can tell which slice is shown. Instance Numbers run
            against the slice position (the viewer must sort by position);
            a prior CT of the same patient (5 slices, disc of 50 mm);
          patient Hong^Gildong: an MR series (unsigned 12-bit, no window in
            the file), an RGB secondary capture (left half red, right half
            blue), a Basic Text SR (no pixels), an image with a window and two
            VOI LUTs (one large, sent as BulkDataURI, one small as US values),
            two PALETTE COLOR images (8-bit indices with 16-bit entries
            inline; 16-bit indices with 8-bit entries, a first mapped value
            of 100, as BulkDataURI), a 12-frame 8-bit image, and two
            YBR_FULL_422 images (uncompressed, and JPEG Baseline made with
            Pillow), red on the left, blue on the right;
  bench/  (with --bench N) a CT of N slices, 512×512, for the timing benchmark;
  expected.json  UIDs and geometry for the test.

usage: python make_data.py OUT_DIR [--bench N]
"""

import json
import os
import sys

import io

import numpy as np
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PREFIX = "1.2.826.0.1.3680043.8.498."
SLICES = 40
SIZE = 256
SPACING = 0.5
THICKNESS = 2.5
DISC_HU = 200
DISC_MM = 80.0
PRIOR_DISC_MM = 50.0
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
SR = "1.2.840.10008.5.1.4.1.1.88.11"
SC_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.7.2"
US = "1.2.840.10008.5.1.4.1.1.6.1"
MULTIFRAME_FRAMES = 12


def uid(*parts):
    return generate_uid(PREFIX, entropy_srcs=["haneul-viewer-e2e", *map(str, parts)])


def base(sop_class, sop_uid, patient, study, series, modality):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = patient.get("charset", "ISO_IR 100")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.PatientBirthDate = patient["birth"]
    ds.PatientSex = patient["sex"]
    ds.StudyInstanceUID = study["uid"]
    ds.StudyDate = study["date"]
    ds.StudyTime = "101500"
    ds.StudyID = study["id"]
    ds.AccessionNumber = study["accession"]
    ds.StudyDescription = study["description"]
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series["uid"]
    ds.SeriesNumber = series["number"]
    ds.SeriesDescription = series["description"]
    ds.Modality = modality
    return ds


def save(ds, path):
    ds.save_as(path, enforce_file_format=True)


def phantom(size, spacing, disc_mm, marker_column=None):
    """HU image: air, water body, disc; optional 6×6 marker at row 20."""
    centre = size / 2
    c = np.arange(size) + 0.5
    x, y = np.meshgrid(c, c)
    r = np.hypot(x - centre, y - centre) * spacing
    hu = np.full((size, size), -1000, dtype=np.int16)
    hu[r <= 55.0 * (size * spacing) / (SIZE * SPACING)] = 0
    hu[r <= disc_mm / 2] = DISC_HU
    if marker_column is not None:
        hu[20:26, marker_column : marker_column + 6] = 1000
    return hu


def gray_image(ds, size, allocated, stored, photometric="MONOCHROME2"):
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = allocated
    ds.BitsStored = stored
    ds.HighBit = stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [1, 1]


def ct_series(out, patient, study, series, slices, size, spacing, disc_mm, tag):
    os.makedirs(out, exist_ok=True)
    files = []
    template = None
    for i in range(slices):
        sop = uid(tag, "slice", i)
        ds = base(CT, sop, patient, study, series, "CT")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = uid(tag, "frame")
        # Instance numbers against the position: the viewer sorts by position.
        ds.InstanceNumber = slices - i
        origin = -size * spacing / 2
        ds.ImagePositionPatient = [origin, origin, round(i * THICKNESS, 3)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = round(i * THICKNESS, 3)
        ds.SliceThickness = THICKNESS
        ds.PixelSpacing = [spacing, spacing]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = [40, 400]
        ds.WindowWidth = [350, 1800]
        ds.WindowCenterWidthExplanation = ["FILE SOFT", "FILE BONE"]
        if template is None or size <= SIZE:
            template = phantom(size, spacing, disc_mm)
        hu = template.copy()
        column = 8 + (i * 5) % (size - 20)
        hu[20:26, column : column + 6] = 1000
        ds.PixelData = (hu.astype(np.int32) + 1024).astype("<i2").tobytes()
        path = os.path.join(out, f"{tag}-{i:04d}.dcm")
        save(ds, path)
        files.append(path)
    return files


def main():
    out = sys.argv[1]
    bench = int(sys.argv[sys.argv.index("--bench") + 1]) if "--bench" in sys.argv else 0
    main_dir = os.path.join(out, "main")
    os.makedirs(main_dir, exist_ok=True)

    kim = {"name": "김^민준", "id": "VIEW-KR-001", "birth": "19800304", "sex": "M", "charset": "ISO_IR 192"}
    current = {"uid": uid("study", "current"), "date": "20240315", "id": "KR2", "accession": "ACC-KR-2",
               "description": "CT phantom current"}
    prior = {"uid": uid("study", "prior"), "date": "20230110", "id": "KR1", "accession": "ACC-KR-1",
             "description": "CT phantom prior"}
    ct = {"uid": uid("series", "current-ct"), "number": 2, "description": "Axial 2.5 mm"}
    prior_ct = {"uid": uid("series", "prior-ct"), "number": 2, "description": "Axial prior"}
    ct_series(main_dir, kim, current, ct, SLICES, SIZE, SPACING, DISC_MM, "ct")
    ct_series(main_dir, kim, prior, prior_ct, 5, SIZE, SPACING, PRIOR_DISC_MM, "prior")

    hong = {"name": "Hong^Gildong", "id": "VIEW-EN-001", "birth": "19700101", "sex": "F"}
    other = {"uid": uid("study", "hong"), "date": "20240301", "id": "EN1", "accession": "ACC-EN-1",
             "description": "MR and more"}
    mr = {"uid": uid("series", "mr"), "number": 1, "description": "T1 12-bit"}
    for i in range(3):
        ds = base(MR, uid("mr", i), hong, other, mr, "MR")
        ds.InstanceNumber = i + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 64
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelSpacing = [1, 1]
        ramp = (np.arange(64 * 64).reshape(64, 64) % 4096).astype("<u2")
        ds.PixelData = ramp.tobytes()
        save(ds, os.path.join(main_dir, f"mr-{i}.dcm"))
    sc = {"uid": uid("series", "rgb"), "number": 3, "description": "RGB capture"}
    ds = base(SC, uid("rgb"), hong, other, sc, "OT")
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[:, :32] = [220, 20, 20]
    rgb[:, 32:] = [20, 20, 220]
    ds.PixelData = rgb.tobytes()
    save(ds, os.path.join(main_dir, "rgb.dcm"))
    # Window and VOI LUTs: left half 100, right half 900 (unsigned 12-bit).
    voi = {"uid": uid("series", "voi"), "number": 5, "description": "VOI LUT"}
    ds = base(MR, uid("voi"), hong, other, voi, "MR")
    ds.InstanceNumber = 1
    gray_image(ds, 64, 16, 12)
    half = np.full((64, 64), 100, dtype="<u2")
    half[:, 32:] = 900
    ds.PixelData = half.tobytes()
    ds.WindowCenter = 500
    ds.WindowWidth = 1000
    ds.WindowCenterWidthExplanation = "FILE WINDOW"
    inverse = Dataset()  # 4096 16-bit entries (8 KiB: a BulkDataURI), descending
    inverse.add_new(0x00283002, "US", [4096, 0, 16])
    inverse.add_new(0x00283003, "LO", "INVERSE")
    inverse.add_new(0x00283006, "OW", np.maximum(0, 65535 - np.arange(4096) * 64).astype("<u2").tobytes())
    step = Dataset()  # 256 8-bit entries as US values: 200 below 128, 50 above
    step.add_new(0x00283002, "US", [256, 0, 8])
    step.add_new(0x00283003, "LO", "STEP")
    step.add_new(0x00283006, "US", [200] * 128 + [50] * 128)
    ds.VOILUTSequence = Sequence([inverse, step])
    save(ds, os.path.join(main_dir, "voi.dcm"))
    # PALETTE COLOR, 8-bit indices, 16-bit entries (inline): 10 left, 200 right.
    pal8 = {"uid": uid("series", "palette8"), "number": 6, "description": "Palette 8-bit"}
    ds = base(SC, uid("palette8"), hong, other, pal8, "OT")
    ds.InstanceNumber = 1
    gray_image(ds, 64, 8, 8, "PALETTE COLOR")
    indices = np.full((64, 64), 10, dtype=np.uint8)
    indices[:, 32:] = 200
    ds.PixelData = indices.tobytes()
    ramp = np.arange(256)
    tables = {"Red": ramp * 257, "Green": (255 - ramp) * 257, "Blue": np.where(ramp >= 128, 65535, 0)}
    for number, (colour, table) in enumerate(tables.items()):
        ds.add_new(0x00281101 + number, "US", [256, 0, 16])
        ds.add_new(0x00281201 + number, "OW", table.astype("<u2").tobytes())
    save(ds, os.path.join(main_dir, "palette8.dcm"))
    # PALETTE COLOR, 16-bit indices, 4096 8-bit entries from 100 (BulkDataURI):
    # 1050 → entry 950 (red), 3000 → entry 2900 (green); blue 128 everywhere.
    pal16 = {"uid": uid("series", "palette16"), "number": 7, "description": "Palette 16-bit"}
    ds = base(SC, uid("palette16"), hong, other, pal16, "OT")
    ds.InstanceNumber = 1
    gray_image(ds, 64, 16, 16, "PALETTE COLOR")
    indices = np.full((64, 64), 1050, dtype="<u2")
    indices[:, 32:] = 3000
    ds.PixelData = indices.tobytes()
    entry = np.arange(4096)
    tables = {"Red": np.where(entry < 1000, 255, 0), "Green": np.where(entry < 1000, 0, 255), "Blue": np.full(4096, 128)}
    for number, table in enumerate(tables.values()):
        ds.add_new(0x00281101 + number, "US", [4096, 100, 8])
        ds.add_new(0x00281201 + number, "OW", table.astype(np.uint8).tobytes())
    save(ds, os.path.join(main_dir, "palette16.dcm"))
    # Multi-frame, 8-bit: frame f (from 0) is 0 on the left, 10 + 20 f on the right.
    multi = {"uid": uid("series", "multiframe"), "number": 8, "description": "Multi-frame"}
    ds = base(SC_MULTIFRAME, uid("multiframe"), hong, other, multi, "OT")
    ds.InstanceNumber = 1
    gray_image(ds, 64, 8, 8)
    ds.NumberOfFrames = MULTIFRAME_FRAMES
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 100
    ds.WindowCenter = 127.5
    ds.WindowWidth = 256
    frames = np.zeros((MULTIFRAME_FRAMES, 64, 64), dtype=np.uint8)
    for f in range(MULTIFRAME_FRAMES):
        frames[f, :, 32:] = 10 + 20 * f
    ds.PixelData = frames.tobytes()
    save(ds, os.path.join(main_dir, "multiframe.dcm"))
    # YBR_FULL_422: uncompressed (Y1 Y2 Cb Cr per pair of pixels), and JPEG Baseline.
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[:, :32] = [220, 20, 20]
    rgb[:, 32:] = [20, 20, 220]
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    ybr = np.clip(np.round(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)
    packed = np.empty((64, 32, 4), dtype=np.uint8)
    packed[..., 0] = ybr[:, 0::2, 0]
    packed[..., 1] = ybr[:, 1::2, 0]
    packed[..., 2] = ybr[:, 0::2, 1]
    packed[..., 3] = ybr[:, 0::2, 2]
    for tag, number, compressed in (("ybr422", 9, False), ("jpeg422", 10, True)):
        series = {"uid": uid("series", tag), "number": number, "description": f"YBR_FULL_422 {'JPEG' if compressed else 'native'}"}
        # The JPEG is an ultrasound image: a SOP class of its own, so that storescu -R
        # proposes JPEG Baseline for it alone.
        ds = base(US if compressed else SC, uid(tag), hong, other, series, "US" if compressed else "OT")
        ds.InstanceNumber = 1
        ds.ConversionType = "WSD"
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
        ds.Rows = ds.Columns = 64
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        if compressed:
            jpeg = io.BytesIO()
            Image.fromarray(rgb, "RGB").save(jpeg, "JPEG", quality=95, subsampling=1)  # 4:2:2, YCbCr
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
            ds.PixelData = encapsulate([jpeg.getvalue()])
            ds["PixelData"].VR = "OB"
            ds.LossyImageCompression = "01"
        else:
            ds.PixelData = packed.tobytes()
        save(ds, os.path.join(main_dir, f"{tag}.dcm"))
    sr = {"uid": uid("series", "sr"), "number": 4, "description": "Report"}
    ds = base(SR, uid("sr"), hong, other, sr, "SR")
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    concept = Dataset()
    concept.CodeValue = "18748-4"
    concept.CodingSchemeDesignator = "LN"
    concept.CodeMeaning = "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = Sequence([concept])
    save(ds, os.path.join(main_dir, "sr.dcm"))

    expected = {
        "koreanName": "김민준",
        "koreanSearch": "김",
        "patientId": kim["id"],
        "current": {"study": current["uid"], "series": ct["uid"], "slices": SLICES, "description": current["description"]},
        "prior": {"study": prior["uid"], "series": prior_ct["uid"], "slices": 5, "description": prior["description"]},
        "hong": {"study": other["uid"], "mr": mr["uid"], "mrFailing": uid("mr", 1), "rgb": sc["uid"], "sr": sr["uid"],
                 "voi": voi["uid"], "palette8": pal8["uid"], "palette16": pal16["uid"], "multiframe": multi["uid"],
                 "multiframeFrames": MULTIFRAME_FRAMES, "ybr422": uid("series", "ybr422"),
                 "jpeg422": uid("series", "jpeg422")},
        "size": SIZE, "spacing": SPACING, "thickness": THICKNESS, "discHu": DISC_HU, "discMm": DISC_MM,
        "priorDiscMm": PRIOR_DISC_MM, "markerRow": 23,
    }
    if bench:
        patient = {"name": "Bench^Five Hundred", "id": "VIEW-BENCH", "birth": "19600101", "sex": "O"}
        study = {"uid": uid("study", "bench"), "date": "20240316", "id": "B1", "accession": "ACC-BENCH",
                 "description": f"Benchmark CT {bench} slices"}
        series = {"uid": uid("series", "bench"), "number": 1, "description": "512 matrix"}
        ct_series(os.path.join(out, "bench"), patient, study, series, bench, 512, 0.7, 200.0, "bench")
        expected["bench"] = {"study": study["uid"], "series": series["uid"], "slices": bench, "patientId": patient["id"]}
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
