"""Write examples/sample_document.pdf: three made-up pages (an invoice, a chart, a table).

Made for this project with Pillow and pypdfium2 (CC0, see examples/LICENSES):
`python examples/make_sample_document.py`. The pages are images (A4 drawn at 150 dpi, stored
losslessly), as a scanned document would be.
"""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
FONTS = Path("/usr/share/fonts/truetype/dejavu")
A4 = (1240, 1754)  # 150 dpi
A4_POINTS = (595.2, 841.92)  # the same page in PDF units (1/72 inch)
INK, GREY, BLUE = (20, 20, 20), (120, 120, 120), (40, 90, 170)

INVOICE_ITEMS = [  # (description, quantity, unit price)
    ("A4 copy paper, 500 sheets", 10, 4.50),
    ("Recycled envelopes C5, box of 100", 3, 7.20),
    ("Ballpoint pens, blue, box of 50", 2, 9.90),
    ("Desk organiser, bamboo", 1, 24.00),
]
QUARTERS = [("Q1", 120), ("Q2", 185), ("Q3", 150), ("Q4", 230)]  # thousand sheets sold
INVENTORY = [  # (item, department, count, last checked)
    ("Laptop", "Design", 14, "2024-03-02"),
    ("Monitor", "Design", 22, "2024-03-02"),
    ("Laptop", "Sales", 9, "2024-02-18"),
    ("Printer", "Office", 3, "2024-01-30"),
    ("Projector", "Training", 2, "2024-02-05"),
    ("Desk phone", "Support", 17, "2024-03-11"),
]


def font(size: int, bold: bool = False, mono: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSansMono" if mono else "DejaVuSans"
    return ImageFont.truetype(str(FONTS / f"{name}{'-Bold' if bold else ''}.ttf"), size)


def page() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", A4, "white")
    return image, ImageDraw.Draw(image)


def footer(draw: ImageDraw.ImageDraw, number: int) -> None:
    draw.text((620, 1680), f"Page {number} of 3", fill=GREY, font=font(22), anchor="mm")


def invoice() -> Image.Image:
    image, draw = page()
    draw.text((100, 100), "Northwind Paper Co.", fill=BLUE, font=font(44, bold=True))
    draw.text(
        (100, 160), "12 Mill Lane, Riverton · billing@northwind.example", fill=GREY, font=font(24)
    )
    draw.text((1140, 100), "INVOICE", fill=INK, font=font(52, bold=True), anchor="ra")
    details = ["Invoice no.: 2024-0117", "Date: 05/04/2024", "Due date: 05/05/2024"]
    for i, line in enumerate(details):
        draw.text((1140, 180 + 36 * i), line, fill=INK, font=font(24), anchor="ra")
    draw.text((100, 320), "Bill to:", fill=GREY, font=font(24))
    draw.text((100, 356), "Harbour Design Studio, 4 Quay Street", fill=INK, font=font(28))
    top = 460
    draw.rectangle((100, top, 1140, top + 50), fill=(230, 236, 246))
    for x, title, anchor in ((115, "Description", "la"), (820, "Qty", "ra"), (960, "Unit", "ra")):
        draw.text((x, top + 12), title, fill=INK, font=font(24, bold=True), anchor=anchor)
    draw.text((1125, top + 12), "Amount", fill=INK, font=font(24, bold=True), anchor="ra")
    subtotal = 0.0
    for i, (name, quantity, price) in enumerate(INVOICE_ITEMS):
        y = top + 70 + 50 * i
        amount = quantity * price
        subtotal += amount
        draw.text((115, y), name, fill=INK, font=font(24))
        draw.text((820, y), str(quantity), fill=INK, font=font(24, mono=True), anchor="ra")
        draw.text((960, y), f"{price:.2f}", fill=INK, font=font(24, mono=True), anchor="ra")
        draw.text((1125, y), f"{amount:.2f}", fill=INK, font=font(24, mono=True), anchor="ra")
    y = top + 70 + 50 * len(INVOICE_ITEMS) + 20
    draw.line((700, y, 1140, y), fill=GREY, width=2)
    vat = round(subtotal * 0.2, 2)
    totals = [("Subtotal", subtotal), ("VAT (20%)", vat), ("TOTAL DUE (EUR)", subtotal + vat)]
    for i, (label, value) in enumerate(totals):
        bold = i == len(totals) - 1
        draw.text((960, y + 20 + 45 * i), label, fill=INK, font=font(26, bold), anchor="ra")
        draw.text(
            (1125, y + 20 + 45 * i), f"{value:.2f}", fill=INK, font=font(26, bold), anchor="ra"
        )
    draw.text((100, 1500), "Payment by bank transfer within 30 days.", fill=GREY, font=font(24))
    footer(draw, 1)
    return image


def chart() -> Image.Image:
    image, draw = page()
    draw.text((620, 140), "Paper sold in 2024", fill=INK, font=font(44, bold=True), anchor="mm")
    draw.text((620, 200), "(thousand sheets, by quarter)", fill=GREY, font=font(26), anchor="mm")
    left, bottom, height = 200, 1100, 700
    draw.line((left, bottom, 1100, bottom), fill=INK, width=3)
    draw.line((left, bottom, left, bottom - height - 20), fill=INK, width=3)
    for value in range(0, 251, 50):
        y = bottom - value * height / 250
        draw.line((left - 10, y, left, y), fill=INK, width=2)
        draw.text((left - 20, y), str(value), fill=INK, font=font(22), anchor="rm")
    for i, (quarter, value) in enumerate(QUARTERS):
        x = left + 60 + i * 220
        y = bottom - value * height / 250
        draw.rectangle((x, y, x + 140, bottom), fill=BLUE)
        draw.text((x + 70, y - 16), str(value), fill=INK, font=font(26, bold=True), anchor="mb")
        draw.text((x + 70, bottom + 20), quarter, fill=INK, font=font(28), anchor="ma")
    footer(draw, 2)
    return image


def table() -> Image.Image:
    image, draw = page()
    draw.text((100, 100), "Equipment inventory, March 2024", fill=INK, font=font(40, bold=True))
    columns = [(100, "Item"), (420, "Department"), (760, "Count"), (900, "Last checked")]
    top, row = 220, 60
    draw.rectangle((100, top, 1140, top + row), fill=(230, 236, 246))
    for x, title in columns:
        draw.text((x + 12, top + 16), title, fill=INK, font=font(26, bold=True))
    for i, values in enumerate(INVENTORY):
        y = top + row * (i + 1)
        draw.line((100, y, 1140, y), fill=GREY, width=1)
        for (x, _), value in zip(columns, values, strict=True):
            draw.text((x + 12, y + 16), str(value), fill=INK, font=font(26))
    bottom = top + row * (len(INVENTORY) + 1)
    draw.rectangle((100, top, 1140, bottom), outline=INK, width=2)
    total = sum(values[2] for values in INVENTORY)
    draw.text((112, bottom + 30), f"Total items: {total}", fill=INK, font=font(26, bold=True))
    footer(draw, 3)
    return image


def write(path: Path = HERE / "sample_document.pdf") -> Path:
    document = pdfium.PdfDocument.new()
    for image in (invoice(), chart(), table()):
        page = document.new_page(*A4_POINTS)
        picture = pdfium.PdfImage.new(document)
        picture.set_bitmap(pdfium.PdfBitmap.from_pil(image))  # PDFium stores it Flate-compressed
        picture.set_matrix(pdfium.PdfMatrix().scale(*A4_POINTS))
        page.insert_obj(picture)
        page.gen_content()
    document.save(path)
    return path


if __name__ == "__main__":
    print(write())
