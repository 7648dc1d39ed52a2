"""PIL / torchvision references for the image tests (python3-pil, python3-torchvision 0.14).

  formats <dir>      writes images in every format PIL can write, plus PIL's decoding of each
                     (convert("RGB"), uint8 H x W x 3) into <dir>/decoded (a tensor bundle)
  transforms <dir>   writes a source image (<dir>/source.png) and torchvision's output for each
                     transform with fixed parameters into <dir>/expected (a tensor bundle)
  decode <dir>       decodes every file in <dir> (made by the C++ test) with PIL into
                     <dir>/decoded
  photos <dir>       an image folder of photo-sized JPEGs (<dir>/images/{a,b}) and torchvision's
                     ImageFolder + Resize(32) + CenterCrop(32) + ToTensor of each, in file order (<dir>/expected)
"""
import os
import sys

import numpy as np
import torch
from PIL import Image

import bundle


def structured(h, w, seed, channels=3):
    """Smooth gradients plus edges and noise: content on which resampling differences show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = [(x * 255.0 / max(w - 1, 1)), (y * 255.0 / max(h - 1, 1)),
            ((x + y) % 32) * 8.0]
    img = np.stack(base[:channels], -1) if channels > 1 else base[0][..., None]
    img[h // 3: h // 2, w // 4: w // 2] = 255 - img[h // 3: h // 2, w // 4: w // 2]
    img = img + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def decoded(path):
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8).copy())


def formats(folder):
    os.makedirs(folder, exist_ok=True)
    rgb = structured(37, 53, 1)
    grey = structured(37, 53, 2, channels=1)[..., 0]
    files = {}

    def save(name, image, **kw):
        path = os.path.join(folder, name)
        image.save(path, **kw)
        files[name.replace(".", "_")] = decoded(path)

    save("rgb.png", Image.fromarray(rgb))
    save("grey.png", Image.fromarray(grey, "L"))
    la = np.stack([grey, structured(37, 53, 3, 1)[..., 0]], -1)
    save("grey_alpha.png", Image.fromarray(la, "LA"))
    rgba = np.concatenate([rgb, structured(37, 53, 4, 1)], -1)
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("palette.png", Image.fromarray(rgb).quantize(64))
    # 16-bit RGB PNG: PIL cannot write it from "RGB"; write raw with numpy via PIL's "I;16"
    # per channel is not possible either, so 16-bit RGB files come from the C++ side (stb).
    save("rgb.bmp", Image.fromarray(rgb))
    save("grey.bmp", Image.fromarray(grey, "L"))
    save("rgb.ppm", Image.fromarray(rgb))
    save("grey.pgm", Image.fromarray(grey, "L"))
    save("rgb.tga", Image.fromarray(rgb))
    # TGA has no signature: PIL reads one under any name, and so must we.
    with open(os.path.join(folder, "rgb.tga"), "rb") as tga:
        tga_bytes = tga.read()
    with open(os.path.join(folder, "rgb_tga.img"), "wb") as out:
        out.write(tga_bytes)
    files["rgb_tga_img"] = decoded(os.path.join(folder, "rgb_tga.img"))
    save("palette.gif", Image.fromarray(rgb).quantize(128))
    for quality in (75, 95):
        save("q%d.jpg" % quality, Image.fromarray(rgb), quality=quality)
    save("q90_444.jpg", Image.fromarray(rgb), quality=90, subsampling=0)
    save("grey.jpg", Image.fromarray(grey, "L"), quality=90)
    save("progressive.jpg", Image.fromarray(rgb), quality=85, progressive=True)
    save("q90_422.jpg", Image.fromarray(rgb), quality=90, subsampling=1)
    # Photo-sized, with an odd width and height (the chroma upsampling's edges).
    photo = structured(375, 501, 9)
    save("photo.jpg", Image.fromarray(photo), quality=90)
    save("photo_odd.jpg", Image.fromarray(structured(143, 97, 10)), quality=70)
    save("cmyk.jpg", Image.fromarray(structured(37, 53, 13)).convert("CMYK"), quality=90)
    # Files PIL refuses to identify, listed in <dir>/refused.txt for the C++ test to refuse too: a
    # JPEG after 0xFF fill bytes (stb_image would decode it) and a Softimage PIC header.
    with open(os.path.join(folder, "q75.jpg"), "rb") as jpeg:
        jpeg_bytes = jpeg.read()
    odd = {"fill.jpg": b"\xff\xff\xff" + jpeg_bytes, "fill2.jpg": b"\xff" + jpeg_bytes,
           "softimage.pic": b"\x53\x80\xf6\x34" + bytes(84) + b"PICT" + bytes(200)}
    refused = []
    for name, content in odd.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as out:
            out.write(content)
        try:
            decoded(path)
        except Exception:  # PIL.UnidentifiedImageError or a decoding error
            refused.append(name)
    with open(os.path.join(folder, "refused.txt"), "w") as out:
        out.write("\n".join(refused) + "\n")
    # Decode-time downscaling: PIL's draft picks the DCT scale 1/s, s = 2, 4, 8.
    for s in (2, 4, 8):
        with Image.open(os.path.join(folder, "photo.jpg")) as im:
            im.draft("RGB", (501 // s, 375 // s))
            assert im.size == ((501 + s - 1) // s, (375 + s - 1) // s), im.size
            files["photo_jpg_draft_%d" % s] = torch.from_numpy(
                np.array(im.convert("RGB"), dtype=np.uint8).copy())
    # 16-bit greyscale PNG (PIL mode I;16).
    grey16 = (structured(37, 53, 5, 1)[..., 0].astype(np.uint16) * 257 + 3)
    image16 = Image.fromarray(grey16)  # uint16: mode I;16 (the mode argument is gone in Pillow 13)
    assert image16.mode == "I;16", image16.mode
    image16.save(os.path.join(folder, "grey16.png"))
    files["grey16_png_raw"] = torch.from_numpy(grey16.astype(np.int64))
    bundle.save(os.path.join(folder, "decoded"), files)


def decode(folder):
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            files[name.replace(".", "_")] = decoded(path)
    bundle.save(os.path.join(folder, "decoded"), files)


def transforms(folder):
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode

    os.makedirs(folder, exist_ok=True)
    src = Image.fromarray(structured(45, 61, 7))
    src.save(os.path.join(folder, "source.png"))
    grey_l = Image.fromarray(structured(45, 61, 8, 1)[..., 0], "L")
    grey_l.save(os.path.join(folder, "grey_source.png"))  # one channel on disk
    grey = grey_l.convert("RGB")  # what torchvision's loader gives the transforms
    out = {}

    def put(name, image):
        out[name] = torch.from_numpy(np.array(image, dtype=np.uint8).copy())

    for h, w in ((224, 224), (20, 30), (45, 61), (90, 17), (7, 7)):
        put("resize_%dx%d" % (h, w), F.resize(src, [h, w], InterpolationMode.BILINEAR))
    for size in (32, 50):
        put("resize_short_%d" % size, F.resize(src, size, InterpolationMode.BILINEAR))
        put("resize_grey_short_%d" % size, F.resize(grey, size, InterpolationMode.BILINEAR))
    for h, w in ((20, 20), (21, 30), (44, 60), (50, 70)):
        put("center_crop_%dx%d" % (h, w), F.center_crop(src, [h, w]))
    put("crop_5_7_20_30", F.crop(src, 5, 7, 20, 30))
    put("crop_outside", F.crop(src, -3, 50, 20, 30))
    for mode in ("constant", "edge", "reflect", "symmetric"):
        put("pad_%s" % mode, F.pad(src, [3, 4, 5, 6], fill=17, padding_mode=mode))
    put("hflip", F.hflip(src))
    put("resized_crop", F.resized_crop(src, 4, 6, 30, 40, [24, 24], InterpolationMode.BILINEAR))
    for angle in (17.0, -33.5, 90.0, 180.0, 270.0, 45.0, 1.0):
        put("rotate_%s" % str(angle).replace("-", "m").replace(".", "_"),
            F.rotate(src, angle, InterpolationMode.NEAREST, fill=0))
    for factor in (0.0, 0.6, 1.4):
        tag = str(factor).replace(".", "_")
        put("brightness_" + tag, F.adjust_brightness(src, factor))
        put("contrast_" + tag, F.adjust_contrast(src, factor))
        put("saturation_" + tag, F.adjust_saturation(src, factor))
        put("grey_contrast_" + tag, F.adjust_contrast(grey, factor))
    for hue in (-0.4, -0.1, 0.05, 0.3):
        put("hue_" + str(hue).replace("-", "m").replace(".", "_"), F.adjust_hue(src, hue))
    # Photo-sized and icon-sized sources: shrinking by large factors (the filter spans many
    # pixels) and enlarging.
    photo = Image.fromarray(structured(375, 500, 11))
    photo.save(os.path.join(folder, "photo.png"))
    icon = Image.fromarray(structured(48, 48, 12))
    icon.save(os.path.join(folder, "icon.png"))
    for size in (224, 32, 7):
        put("photo_short_%d" % size, F.resize(photo, size, InterpolationMode.BILINEAR))
    put("photo_1x300", F.resize(photo, [1, 300], InterpolationMode.BILINEAR))
    for size in (224, 32, 61):
        put("icon_short_%d" % size, F.resize(icon, size, InterpolationMode.BILINEAR))
    put("icon_48x100", F.resize(icon, [48, 100], InterpolationMode.BILINEAR))
    put("icon_100x48", F.resize(icon, [100, 48], InterpolationMode.BILINEAR))
    tensor = F.to_tensor(src)
    out["to_tensor"] = tensor
    out["normalize"] = F.normalize(tensor, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    bundle.save(os.path.join(folder, "expected"), out)


def hue_all(folder):
    """torchvision's adjust_hue on an image holding each of the 2^24 colours once (pixel i has
    colour i: red = i >> 16, green = (i >> 8) & 255, blue = i & 255), for two factors."""
    import torchvision.transforms.functional as F

    colours = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], -1)
    image = Image.fromarray(rgb.astype(np.uint8).reshape(4096, 4096, 3))
    out = {}
    for name, factor in (("plus", 0.37), ("minus", -0.21)):
        out[name] = torch.from_numpy(np.array(F.adjust_hue(image, factor), dtype=np.uint8))
    bundle.save(os.path.join(folder, "hue_all"), out)


def photos(folder):
    import torchvision
    import torchvision.transforms as T

    root = os.path.join(folder, "images")
    for c, name in enumerate(("a", "b")):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(3):
            image = Image.fromarray(structured(375 + 40 * i, 500 - 30 * i, 20 + 3 * c + i))
            image.save(os.path.join(root, name, "%d.jpg" % i), quality=90)
    dataset = torchvision.datasets.ImageFolder(
        root, transform=T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()]))
    bundle.save(os.path.join(folder, "expected"),
                {"image_%d" % i: dataset[i][0] for i in range(len(dataset))})


if __name__ == "__main__":
    {"formats": formats, "transforms": transforms, "decode": decode,
     "hue_all": hue_all, "photos": photos}[sys.argv[1]](sys.argv[2])
