"""The demo's bundled image, drawn procedurally (no file ships, nothing is downloaded).

Flat regions (sky, ground) give many near-duplicate patches; a few objects with edges,
text and a fine checkerboard give patches that differ. That contrast is what makes the
kept-token maps of the different methods worth comparing.
"""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def sample_image(size: int = 336) -> Image.Image:
    """RGB image of ``size`` x ``size`` pixels: a small scene with a sun, a house, a tree,
    a checkerboard sign and the word "vtprune". Deterministic (pure drawing, no randomness)."""
    if size < 32:
        raise ValueError(f"sample_image: size must be at least 32 pixels, got {size}")
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    s = size / 336.0  # every coordinate below is laid out for 336 px and scaled

    horizon = int(210 * s)
    for y in range(horizon):  # sky: vertical gradient
        t = y / max(horizon - 1, 1)
        draw.line([(0, y), (size, y)], fill=(int(90 + 100 * t), int(150 + 80 * t), 235))
    for y in range(horizon, size):  # ground: darker green towards the bottom
        t = (y - horizon) / max(size - horizon - 1, 1)
        draw.line([(0, y), (size, y)], fill=(int(70 - 30 * t), int(160 - 60 * t), int(60 - 20 * t)))

    def box(x0, y0, x1, y1):
        return [int(x0 * s), int(y0 * s), int(x1 * s), int(y1 * s)]

    draw.ellipse(box(250, 24, 310, 84), fill=(255, 210, 40))  # sun
    draw.rectangle(box(40, 130, 150, 230), fill=(200, 60, 50))  # house
    draw.polygon([(int(30 * s), int(130 * s)), (int(95 * s), int(80 * s)), (int(160 * s), int(130 * s))], fill=(120, 40, 30))
    draw.rectangle(box(82, 180, 108, 230), fill=(70, 40, 20))  # door
    draw.rectangle(box(55, 145, 78, 165), fill=(180, 220, 255))  # window
    draw.rectangle(box(225, 150, 237, 230), fill=(90, 60, 30))  # tree trunk
    draw.ellipse(box(195, 95, 270, 170), fill=(30, 120, 40))  # tree crown

    cell = max(int(7 * s), 1)  # a checkerboard sign: high-frequency texture
    x0, y0 = int(175 * s), int(245 * s)
    for i in range(8):
        for j in range(8):
            color = (20, 20, 20) if (i + j) % 2 == 0 else (240, 240, 240)
            draw.rectangle([x0 + j * cell, y0 + i * cell, x0 + (j + 1) * cell - 1, y0 + (i + 1) * cell - 1], fill=color)

    font = ImageFont.load_default(size=max(int(34 * s), 8))
    draw.text((int(20 * s), int(265 * s)), "vtprune", fill=(255, 255, 255), font=font)
    return img
