"""Image folders for benchmarks/loader_throughput, made once with PIL (python3-pil):

  photos        600 photo-like colour JPEGs, 500x375, quality 90, 4:2:0 (6 classes)
  photos-large  300 photo-like colour JPEGs, 1024x768, quality 90, 4:2:0 (6 classes)
  icons         the full-colour 48x48 PNG icons of Debian's adwaita-icon-theme (RGBA), one class
                per icon category; 600 generated RGBA icons when the theme is not installed

No photographs ship in Debian's or PyPI's packages that a benchmark could rely on, so the photos
are generated: smooth shading, blurred shapes with edges, fine texture and sensor-like noise,
which JPEG-compress to the sizes of real photos (about 80 KB at 500x375, 300 KB at 1024x768).

  python3 loader_folders.py OUT_DIR [photos|photos-large|icons ...]
A folder that exists is kept as it is.
"""
import os
import shutil
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ICON_THEME = "/usr/share/icons/Adwaita/48x48"


def photo(width, height, rng):
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.15, 0.15, (2, 3)) * 500 / width
    image = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(8, 20))):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.5) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 2.0)))
    pixels = np.asarray(canvas).astype(np.float32)
    texture = np.sin(x / rng.uniform(2, 6)) * np.cos(y / rng.uniform(2, 6)) * rng.uniform(4, 10)
    # Grain: luminance noise plus a little colour noise, as a camera sensor's.
    pixels += (texture[..., None] + rng.normal(0, 12.0, (height, width, 1))
               + rng.normal(0, 4.0, pixels.shape))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def photos(out, count, width, height, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = os.path.join(out, "class%d" % (i % 6))
        os.makedirs(folder, exist_ok=True)
        photo(width, height, rng).save(os.path.join(folder, "%04d.jpg" % i), quality=90,
                                       subsampling=2)


def icons(out):
    if os.path.isdir(ICON_THEME):
        for category in sorted(os.listdir(ICON_THEME)):
            names = [n for n in sorted(os.listdir(os.path.join(ICON_THEME, category)))
                     if n.endswith(".png") and "symbolic" not in n]
            if len(names) < 2:
                continue
            os.makedirs(os.path.join(out, category), exist_ok=True)
            for name in names:
                shutil.copy(os.path.join(ICON_THEME, category, name),
                            os.path.join(out, category, name))
        return
    rng = np.random.default_rng(3)
    for i in range(600):
        folder = os.path.join(out, "class%d" % (i % 6))
        os.makedirs(folder, exist_ok=True)
        icon = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
        draw = ImageDraw.Draw(icon)
        for _ in range(3):
            x0, y0 = rng.integers(0, 30, 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,)
            draw.ellipse([int(x0), int(y0), int(x0) + 18, int(y0) + 18], fill=colour)
        icon.save(os.path.join(folder, "%04d.png" % i))


def main():
    out = sys.argv[1]
    wanted = sys.argv[2:] or ["photos", "photos-large", "icons"]
    makers = {"photos": lambda d: photos(d, 600, 500, 375, 1),
              "photos-large": lambda d: photos(d, 300, 1024, 768, 2),
              "icons": icons}
    for name in wanted:
        folder = os.path.join(out, name)
        if os.path.isdir(folder):
            print("%s: kept" % folder)
            continue
        makers[name](folder + ".partial")
        os.rename(folder + ".partial", folder)
        print("%s: made" % folder)


if __name__ == "__main__":
    main()
