//! Reading a `values` source (SQLite, MySQL): rows come as values and are encoded here.

use super::feed::Feed;
use crate::Result;
use crate::model::{Value, encode_value};
use futures::StreamExt;
use futures::stream::BoxStream;

/// Encodes a `values` source's rows (SQLite, MySQL) into `feed`, until they end or the
/// feed asks to restart.
pub(super) async fn feed_values(
    mut rows: BoxStream<'_, Result<Vec<Value>>>,
    feed: &mut Feed<'_>,
) -> Result<()> {
    while let Some(row) = rows.next().await {
        for v in &row? {
            encode_value(&mut feed.buf, v);
        }
        feed.count_row();
        feed.send_if_full().await?;
        if feed.restart {
            break;
        }
    }
    Ok(())
}
