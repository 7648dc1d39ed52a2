"""Image folders for benchmarks/loader_throughput, made once with PIL (python3-pil):

  photos        600 photo-like colour JPEGs, 500x375, quality 90, 4:2:0 (6 classes)
  photos-large  300 photo-like colour JPEGs, 1024x768, quality 90, 4:2:0 (6 classes)
  icons         the full-colour 48x48 PNG icons of Debian's adwaita-icon-theme (RGBA), one class
                per icon category; 600 generated RGBA icons when the theme is not installed
  shapes        a labelled colour-photo task for training (docs/results.md, "Another data set"):
                2,400 photo-like JPEGs, 160x120, 6 classes by the object in the scene (disc,
                square, triangle, star, ring, cross) at a random place, size, angle and colour,
                among a little of the photos' blurred clutter; the class sets nothing else

No photographs ship in Debian's or PyPI's packages that a benchmark could rely on, so the photos
are generated: smooth shading, blurred shapes with edges, fine texture and sensor-like noise,
which JPEG-compress to the sizes of real photos (about 80 KB at 500x375, 300 KB at 1024x768).

  python3 loader_folders.py OUT_DIR [photos|photos-large|icons|shapes ...]
A folder that exists is kept as it is.
"""
import os
import shutil
import sys

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ICON_THEME = "/usr/share/icons/Adwaita/48x48"


def photo(width, height, rng, clutter=(8, 20)):
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.15, 0.15, (2, 3)) * 500 / width
    image = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(*clutter))):
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


SHAPES = ["disc", "square", "triangle", "star", "ring", "cross"]


def polygon(cx, cy, radius, angle, corners, inner=None):
    """Corners of a regular polygon (or a star, with `inner` the ratio of the inner radius)."""
    points = []
    steps = corners * (2 if inner else 1)
    for i in range(steps):
        r = radius * (inner if inner and i % 2 else 1.0)
        a = angle + 2 * math.pi * i / steps
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def shape_scene(kind, width, height, rng):
    """A photo-like background with one object of the class `kind`, sharper than the clutter."""
    canvas = photo(width, height, rng, clutter=(2, 6))
    draw = ImageDraw.Draw(canvas)
    radius = rng.uniform(0.15, 0.3) * min(width, height)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    angle = rng.uniform(0, 2 * math.pi)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if kind == "disc":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.polygon(polygon(cx, cy, radius, angle, 4), fill=colour)
    elif kind == "triangle":
        draw.polygon(polygon(cx, cy, radius, angle, 3), fill=colour)
    elif kind == "star":
        draw.polygon(polygon(cx, cy, radius, angle, 5, inner=0.45), fill=colour)
    elif kind == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(radius * 0.3)))
    else:  # cross
        arm = radius * 0.3
        for a in (angle, angle + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            draw.polygon([(cx + radius * dx - arm * dy, cy + radius * dy + arm * dx),
                          (cx + radius * dx + arm * dy, cy + radius * dy - arm * dx),
                          (cx - radius * dx + arm * dy, cy - radius * dy - arm * dx),
                          (cx - radius * dx - arm * dy, cy - radius * dy + arm * dx)], fill=colour)
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    pixels = np.asarray(canvas).astype(np.float32) + rng.normal(0, 6.0, (height, width, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def shapes(out, count, width, height, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
        kind = SHAPES[i % len(SHAPES)]
        folder = os.path.join(out, kind)
        os.makedirs(folder, exist_ok=True)
        shape_scene(kind, width, height, rng).save(os.path.join(folder, "%04d.jpg" % i),
                                                   quality=90, subsampling=2)


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
              "icons": icons,
              "shapes": lambda d: shapes(d, 2400, 160, 120, 4)}
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
