//! The web console: a few static files embedded in the binary at build time, so an edge box
//! without internet serves the whole console itself and building needs no JavaScript toolchain.
//! Also the optional plant-layout image (`[http] layout_image`), read once at start.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// (name under /assets/, content type, bytes)
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("console/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/api.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/i18n.js"),
    ),
    (
        "map.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/map.js"),
    ),
    (
        "trend.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/trend.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("console/favicon.svg"),
    ),
];

const INDEX: &str = include_str!("console/index.html");

/// Pages must never use another origin, nor be framed by one.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The console is revalidated on every load (an upgrade takes effect at once) and tagged by a
/// digest of all its files, so an unchanged one costs a 304.
fn etag() -> String {
    static ETAG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(INDEX.as_bytes());
        for (name, _, bytes) in ASSETS {
            h.update(name.as_bytes());
            h.update(bytes);
        }
        let digest = h.finalize();
        format!(
            "\"{}\"",
            digest
                .iter()
                .take(12)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    });
    ETAG.clone()
}

fn headers(content_type: &'static str) -> [(header::HeaderName, String); 5] {
    [
        (header::CONTENT_TYPE, content_type.to_owned()),
        (header::CACHE_CONTROL, "no-cache".to_owned()),
        (header::ETAG, etag()),
        (header::CONTENT_SECURITY_POLICY, CSP.to_owned()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
    ]
}

fn not_modified(req: &axum::http::HeaderMap) -> bool {
    req.get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag())
}

pub async fn index(req: axum::http::HeaderMap) -> Response {
    if not_modified(&req) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (headers("text/html; charset=utf-8"), INDEX).into_response()
}

pub async fn asset(UrlPath(name): UrlPath<String>, req: axum::http::HeaderMap) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError(StatusCode::NOT_FOUND, format!("no asset {name:?}")).into_response();
    };
    if not_modified(&req) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (headers(content_type), *bytes).into_response()
}

/// The plant-layout image, read at start.
pub struct LayoutImage {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// Layout images larger than this are refused at start: the console loads it on every visit.
const MAX_LAYOUT_BYTES: u64 = 20 * 1024 * 1024;

impl LayoutImage {
    pub fn load(path: &Path) -> anyhow::Result<LayoutImage> {
        use anyhow::Context as _;
        let len = std::fs::metadata(path)
            .with_context(|| format!("reading http.layout_image {}", path.display()))?
            .len();
        anyhow::ensure!(
            len <= MAX_LAYOUT_BYTES,
            "http.layout_image {} is over 20 MiB",
            path.display()
        );
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading http.layout_image {}", path.display()))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let content_type = match ext.as_str() {
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "svg" => "image/svg+xml",
            "webp" => "image/webp",
            _ => anyhow::bail!(
                "http.layout_image {} must be .png, .jpg, .svg or .webp",
                path.display()
            ),
        };
        Ok(LayoutImage {
            content_type,
            bytes,
        })
    }
}

/// `GET /api/v1/site/layout`: behind the token like the rest of the site's data (a plant's
/// layout is not for everyone); the console fetches it with its token.
pub async fn layout(State(state): State<AppState>) -> Response {
    match &state.layout {
        Some(image) => {
            let image: &Arc<LayoutImage> = image;
            (
                [
                    (header::CONTENT_TYPE, image.content_type),
                    (header::CACHE_CONTROL, "private, max-age=300"),
                    // An SVG layout could carry scripts: never run them.
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                    ),
                ],
                image.bytes.clone(),
            )
                .into_response()
        }
        None => ApiError(
            StatusCode::NOT_FOUND,
            "no layout image is configured ([http] layout_image)".into(),
        )
        .into_response(),
    }
}
