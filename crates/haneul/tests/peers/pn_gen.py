"""Write small generated Secondary Capture instances as Part 10 files.

argv: SPEC_JSON {"outdir": str, "count": int, "one_study": bool, "prefix": str,
                 "patient_name": str, "patient_id": str, "description": str,
                 "study_uid": str?, "series_uid": str?, "sop_uid": str?,
                 "study_times": [[StudyDate, StudyTime], ...]?}
The first instance is encoded with pydicom; the others are copies with their
UIDs (all of one length) replaced, so thousands take a moment. With
"study_times", instance n (of one study each) has the n-th date and time, and
every file is encoded with pydicom.
prints {"files": [{"path", "sop_class", "sop_uid", "study_uid", "series_uid"}]}"""

import os
import random
import sys

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

sys.dont_write_bytecode = True  # importing pn_util must leave no __pycache__ in the tree
from pn_util import emit, spec

RANDOM = random.Random(os.urandom(16))


def uid_maker():
    """UIDs 2.25.<30 random digits><6-digit counter>, all the same length."""
    stem = f"2.25.{RANDOM.randrange(10**29, 10**30)}"
    return lambda n: f"{stem}{n:06d}"


def build(s, study_uid, series_uid, sop_uid, when=("20240101", "120000")):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate, ds.StudyTime = when
    ds.AccessionNumber = "A1"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.PatientName = s.get("patient_name", "Generated^Patient")
    ds.PatientID = s.get("patient_id", "GEN")
    ds.StudyDescription = s.get("description", "generated")
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(16))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def main():
    s = spec()
    os.makedirs(s["outdir"], exist_ok=True)
    times = s.get("study_times")
    count, one_study = (len(times), False) if times else (s["count"], s.get("one_study", False))
    study, series, sop = uid_maker(), uid_maker(), uid_maker()
    if count == 1 and s.get("sop_uid"):
        uids = [(s["study_uid"], s["series_uid"], s["sop_uid"])]
    else:
        uids = [(study(0 if one_study else n), series(0 if one_study else n), sop(n)) for n in range(count)]
    template = None
    files = []
    for n, (study_uid, series_uid, sop_uid) in enumerate(uids):
        path = os.path.join(s["outdir"], f"{s.get('prefix', 'gen')}{n:05}.dcm")
        if times:
            build(s, study_uid, series_uid, sop_uid, tuple(times[n])).save_as(path, enforce_file_format=True)
        elif template is None:
            build(s, study_uid, series_uid, sop_uid).save_as(path, enforce_file_format=True)
            with open(path, "rb") as f:
                template = f.read()
        else:
            first = uids[0]
            data = template
            for old, new in zip(first, (study_uid, series_uid, sop_uid)):
                assert len(old) == len(new)
                data = data.replace(old.encode(), new.encode())
            with open(path, "wb") as f:
                f.write(data)
        files.append({"path": path, "sop_class": str(SecondaryCaptureImageStorage), "sop_uid": sop_uid,
                      "study_uid": study_uid, "series_uid": series_uid})
    emit({"files": files})


if __name__ == "__main__":
    main()
