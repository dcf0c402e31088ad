//! The merchant list: `GET {base}/merchants?[cursor=&]limit=`, one page a call. A page is
//! small (its merchants' ids, names and zones), so it is read whole, up to
//! [`MAX_MERCHANT_PAGE_BYTES`], then validated by [`parse_merchant_page`]. Requests, statuses,
//! timeouts and retries are those of an entries page ([`super::fetch`]).

use url::Url;

use super::fetch::{Failure, Resource};
use super::{HttpSource, not_json};
use crate::source::validate::parse_merchant_page;
use crate::source::{MerchantPage, SourceError};

/// Longest merchant list page accepted, in bytes: tens of thousands of merchants, far more
/// than a limit asks for, so an upstream that ignores the limit still cannot make a page take
/// memory without bound.
pub const MAX_MERCHANT_PAGE_BYTES: usize = 8 << 20;

impl HttpSource {
    /// `{base}/merchants?[cursor=&]limit=`, every part encoded.
    fn merchants_url(&self, cursor: Option<&str>, limit: u32) -> Result<Url, SourceError> {
        let mut url = self.base.clone();
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| SourceError::Invalid("the source URL cannot take a path".to_owned()))?
            // As for entries: `…/v1` and `…/v1/` both lead to `…/v1/merchants`.
            .pop_if_empty()
            .push("merchants");
        {
            let mut query = url.query_pairs_mut();
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
            query.append_pair("limit", &limit.to_string());
        }
        Ok(url)
    }

    /// The page of the merchant list after `cursor`, validated. The upstream's `nextCursor`
    /// must move on: one equal to `cursor` would list the same page forever.
    pub(super) async fn merchant_page(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<MerchantPage, SourceError> {
        let url = self.merchants_url(cursor, limit)?;
        let body = self.merchant_page_body(&url).await?;
        let page = parse_merchant_page(&body).map_err(not_json)?;
        if cursor.is_some() && page.next_cursor.as_deref() == cursor {
            return Err(SourceError::Invalid(
                "nextCursor: equal to the cursor of the request (the list would loop)".to_owned(),
            ));
        }
        Ok(page)
    }

    /// The whole body of the answer for `url`, requested again after a transient failure.
    async fn merchant_page_body(&self, url: &Url) -> Result<Vec<u8>, SourceError> {
        let mut retries = 0_u32;
        loop {
            match self.read_body(url).await {
                Ok(body) => return Ok(body),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient { reason, after }) => {
                    self.before_retry(Resource::Merchants, &mut retries, reason, after)
                        .await?;
                }
            }
        }
    }

    /// One request for `url`, its body read to the end within [`MAX_MERCHANT_PAGE_BYTES`].
    async fn read_body(&self, url: &Url) -> Result<Vec<u8>, Failure> {
        let mut response = self.request(Resource::Merchants, url).await?;
        // Refused before reading when announced, else as soon as the bytes pass the bound.
        if response
            .content_length()
            .is_some_and(|length| length > MAX_MERCHANT_PAGE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk(&mut response).await? {
            if body.len() + chunk.len() > MAX_MERCHANT_PAGE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn too_large() -> Failure {
    Failure::Fatal(SourceError::Invalid(format!(
        "the source answered with a merchant list page longer than {MAX_MERCHANT_PAGE_BYTES} bytes"
    )))
}
