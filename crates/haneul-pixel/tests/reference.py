"""Reference values for haneul-pixel's tests, computed with pydicom and numpy.

  reference.py pixels FILE rgb|raw     every frame's samples, little endian, to stdout
  reference.py render FILE FRAME C W FUNCTION
      the 8-bit gray image of the PS3.3 display pipeline (rescale, window, MONOCHROME1
      inversion) computed independently here with numpy, to stdout
  reference.py palette FILE            the 8-bit RGB image through the palette LUTs
  reference.py htj2k FILE              frame 0 encoded as a lossless HTJ2K codestream (OpenJPH), to stdout
  reference.py jpeg FILE KIND STREAM DECODED
      frame 0 encoded with libjpeg-turbo (imagecodecs) as KIND: lossless1..lossless7 (16-bit,
      predictor n), extended12 (12-bit lossy, CT values + 1024), ycc420 (8-bit colour, 4:2:0);
      writes the codestream to STREAM and libjpeg-turbo's own decoding of it to DECODED
"""
import sys

import numpy as np
import pydicom


def pixels(path, mode):
    ds = pydicom.dcmread(path)
    ds.pixel_array_options(as_rgb=(mode == "rgb"))
    arr = ds.pixel_array
    sys.stdout.buffer.write(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())


def window(x, c, w, function):
    if function == "LINEAR":
        w = max(w, 1.0)
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
        y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, y)
        y = np.where(x > c - 0.5 + (w - 1) / 2, 255.0, y)
    elif function == "LINEAR_EXACT":
        y = ((x - c) / w + 0.5) * 255.0
        y = np.where(x <= c - w / 2, 0.0, y)
        y = np.where(x > c + w / 2, 255.0, y)
    elif function == "SIGMOID":
        y = 255.0 / (1 + np.exp(-4 * (x - c) / w))
    else:
        raise SystemExit("unknown function " + function)
    return y


def render(path, frame, c, w, function):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float64)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    x = arr * slope + intercept
    y = np.clip(np.floor(window(x, c, w, function) + 0.5), 0, 255).astype(np.uint8)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255 - y
    sys.stdout.buffer.write(y.tobytes())


def palette(path):
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds)
    bits = ds.RedPaletteColorLookupTableDescriptor[2]
    if bits > 8:
        rgb = rgb >> 8
    sys.stdout.buffer.write(rgb.astype(np.uint8).tobytes())


def htj2k(path):
    import imagecodecs

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    sys.stdout.buffer.write(imagecodecs.htj2k_encode(arr))


def jpeg(path, kind, stream_path, decoded_path):
    import imagecodecs

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if kind.startswith("lossless"):
        data = arr.view(np.uint16) if arr.dtype == np.int16 else arr
        stream = imagecodecs.jpeg8_encode(data, lossless=True, predictor=int(kind[-1]), bitspersample=16)
    elif kind == "extended12":
        data = (arr.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
        stream = imagecodecs.jpeg8_encode(data, level=90, bitspersample=12)
    elif kind == "ycc420":
        stream = imagecodecs.jpeg8_encode(np.ascontiguousarray(arr), level=90, subsampling="420")
    else:
        raise SystemExit("unknown kind " + kind)
    with open(stream_path, "wb") as f:
        f.write(stream)
    decoded = imagecodecs.jpeg8_decode(stream)
    with open(decoded_path, "wb") as f:
        f.write(decoded.astype(decoded.dtype.newbyteorder("<")).tobytes())


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "pixels":
        pixels(sys.argv[2], sys.argv[3])
    elif command == "render":
        render(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
    elif command == "palette":
        palette(sys.argv[2])
    elif command == "htj2k":
        htj2k(sys.argv[2])
    elif command == "jpeg":
        jpeg(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        raise SystemExit("unknown command " + command)
