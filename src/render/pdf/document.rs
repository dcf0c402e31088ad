//! The document around the blocks: krilla's document and metadata, one page per planned
//! page with its footer (ledger id and version, DRAFT mark, `Page X of Y`), and the document header of
//! the first page.

use krilla::page::PageSettings;
use krilla::{Document, SerializeSettings};

use super::font::Fonts;
use super::layout::{
    Align, Canvas, Column, HEADER_HEIGHT, LEFT, PAGE_HEIGHT, PAGE_WIDTH, RIGHT, TEXT_SIZE, fill,
};
use super::line::Line;
use super::plan::Pages;
use crate::domain::{Stage, Timezone};
use crate::render::locale::{Conventions, DEFAULT};
use crate::render::{DocumentHeader, RenderError, text};

const GREY: (u8, u8, u8) = (110, 110, 110);
const DRAFT_RED: (u8, u8, u8) = (200, 30, 30);

/// Draws `pages` into a PDF: every page gets the footer, and each block is drawn by `draw`
/// at its top. Returns the PDF's bytes.
pub(super) fn render<B>(
    header: &DocumentHeader,
    fonts: &'static Fonts,
    pages: &Pages<B>,
    mut draw: impl FnMut(&mut Canvas<'_, '_>, f32, &B) -> Result<(), RenderError>,
) -> Result<Vec<u8>, RenderError> {
    let settings = SerializeSettings {
        enable_tagging: false,
        ..SerializeSettings::default()
    };
    let mut document = Document::new_with(settings);
    let utc = |at| text::local_instant(at, Timezone::UTC);
    document.set_metadata(
        krilla::metadata::Metadata::new()
            .title(format!(
                "{} {} {}",
                title(header),
                header.merchant.id,
                header.period
            ))
            .creator("ledger".to_owned())
            .keywords(vec![
                format!("ledger {}", header.ledger_id),
                format!("generated {}", utc(header.generated_at)),
            ]),
    );
    let total = pages.len();
    // A page's rows are one glyph run: room for a full page of them.
    let mut line = Line::new(&fonts.regular, TEXT_SIZE, 8192);
    for (index, blocks) in pages.iter().enumerate() {
        let Some(settings) = PageSettings::from_wh(PAGE_WIDTH, PAGE_HEIGHT) else {
            return Err(pdf_error("invalid page size"));
        };
        let mut page = document.start_page_with(settings);
        let mut surface = page.surface();
        let mut canvas = Canvas {
            surface: &mut surface,
            fonts,
            line: &mut line,
        };
        footer(&mut canvas, header, index + 1, total);
        let drawn = blocks
            .iter()
            .try_for_each(|(top, block)| draw(&mut canvas, *top, block));
        surface.finish();
        page.finish();
        drawn?;
    }
    document.finish().map_err(|e| pdf_error(&format!("{e:?}")))
}

fn pdf_error(what: &str) -> RenderError {
    RenderError::Io(std::io::Error::other(format!("writing the PDF: {what}")))
}

/// `Statement` or `Summary`.
fn title(header: &DocumentHeader) -> &'static str {
    match header.ledger_type {
        crate::domain::LedgerType::Statement => "Statement",
        crate::domain::LedgerType::Summary => "Summary",
    }
}

/// The footer: the ledger id and version (what the file's manifest names), the merchant, a
/// DRAFT mark on drafts, `Page X of Y`.
fn footer(canvas: &mut Canvas<'_, '_>, header: &DocumentHeader, page: usize, total: usize) {
    let y = PAGE_HEIGHT - 28.0;
    canvas.rule(y - 10.0);
    let size = 7.0;
    let half = (RIGHT - LEFT) / 2.0;
    let left = Column {
        title: "",
        x: LEFT,
        width: half - 40.0,
        align: Align::Left,
    };
    let right = Column {
        title: "",
        x: LEFT + half + 40.0,
        width: half - 40.0,
        align: Align::Right,
    };
    let center = Column {
        title: "",
        x: LEFT + half - 40.0,
        width: 80.0,
        align: Align::Left,
    };
    let fonts = canvas.fonts;
    canvas.surface.set_fill(Some(fill(GREY)));
    canvas.line.reset(&fonts.regular, size);
    canvas.line.cell(
        &left,
        &format!(
            "Ledger {} version {} · {}",
            header.ledger_id, header.version, header.merchant.id
        ),
    );
    canvas.line.cell(&right, &format!("Page {page} of {total}"));
    canvas.line.draw(canvas.surface, y);
    canvas.surface.set_fill(None);
    if header.stage == Stage::Draft {
        let width = fonts.bold.width("DRAFT", size);
        let center = Column {
            x: center.x + (center.width - width) / 2.0,
            ..center
        };
        canvas.colored_text(&fonts.bold, size, &center, y, "DRAFT", DRAFT_RED);
    }
}

/// How the header names the number and date format: the merchant's tag, and the table row
/// used when that is not the tag itself (`de-LU (as de-DE)`).
fn locale_label(header: &DocumentHeader, conv: &Conventions) -> String {
    match &header.merchant.locale {
        None => format!("{} (ISO 8601 dates)", DEFAULT.name),
        Some(tag) if tag.as_str() == conv.name => conv.name.to_owned(),
        Some(tag) => format!("{tag} (as {})", conv.name),
    }
}

/// The document header on the first page, [`HEADER_HEIGHT`] points from `top`: title, DRAFT
/// mark, merchant, ledger, period, zone, local and UTC bounds, stage, version, generation,
/// and the locale its numbers and dates are written in (`conv`).
pub(super) fn document_header(
    canvas: &mut Canvas<'_, '_>,
    top: f32,
    header: &DocumentHeader,
    conv: &Conventions,
) {
    let fonts = canvas.fonts;
    let full = Column {
        title: "",
        x: LEFT,
        width: RIGHT - LEFT - 120.0,
        align: Align::Left,
    };
    canvas.text(
        &fonts.bold,
        16.0,
        &full,
        top + 16.0,
        &format!("{} — {}", title(header), header.merchant.name),
    );
    if header.stage == Stage::Draft {
        let mark = Column {
            title: "",
            x: RIGHT - 110.0,
            width: 110.0,
            align: Align::Right,
        };
        canvas.colored_text(&fonts.bold, 18.0, &mark, top + 17.0, "DRAFT", DRAFT_RED);
    }
    canvas.rule(top + 24.0);
    let tz = header.timezone;
    let local = |at| conv.instant(at, tz);
    let utc = |at| conv.instant(at, Timezone::UTC);
    let (first, after) = header.period.local_days();
    let left: [(&str, String); 7] = [
        ("Merchant", header.merchant.name.clone()),
        ("Merchant id", header.merchant.id.to_string()),
        ("Ledger id", header.ledger_id.to_string()),
        ("Ledger type", header.ledger_type.as_str().to_owned()),
        ("Stage", header.stage.as_str().to_owned()),
        ("Version", header.version.to_string()),
        ("Locale", locale_label(header, conv)),
    ];
    let right: [(&str, String); 7] = [
        (
            "Period",
            format!(
                "{} ({} to {}, local days)",
                header.period,
                conv.date(first),
                conv.date(after.pred_opt().unwrap_or(after))
            ),
        ),
        ("Time zone", tz.name().to_owned()),
        ("Start (local)", local(header.bounds.0)),
        ("Start (UTC)", utc(header.bounds.0)),
        ("End, excl. (local)", local(header.bounds.1)),
        ("End, excl. (UTC)", utc(header.bounds.1)),
        ("Generated (UTC)", utc(header.generated_at)),
    ];
    let size = 8.0;
    let pairs = |x: f32, label_width: f32, value_width: f32| {
        (
            Column {
                title: "",
                x,
                width: label_width,
                align: Align::Left,
            },
            Column {
                title: "",
                x: x + label_width + 4.0,
                width: value_width,
                align: Align::Left,
            },
        )
    };
    let middle = LEFT + (RIGHT - LEFT) * 0.42;
    for (items, (label, value)) in [
        (&left[..], pairs(LEFT, 58.0, middle - LEFT - 72.0)),
        (&right[..], pairs(middle, 78.0, RIGHT - middle - 82.0)),
    ] {
        for (i, (name, text)) in items.iter().enumerate() {
            let y = top + 38.0 + i as f32 * 11.5;
            canvas.line.reset(&fonts.bold, size);
            canvas.line.cell(&label, name);
            canvas.line.draw(canvas.surface, y);
            canvas.line.reset(&fonts.regular, size);
            canvas.line.cell(&value, text);
            canvas.line.draw(canvas.surface, y);
        }
    }
    canvas.rule(top + HEADER_HEIGHT - 10.0);
}
