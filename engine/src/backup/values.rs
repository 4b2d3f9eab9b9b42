//! Reading a `values` source (SQLite, MySQL): rows come as values and are encoded here.

use super::Plan;
use super::feed::{Feed, Streamed};
use super::pipeline::Pipeline;
use crate::Result;
use crate::model::{Value, encode_value};
use crate::progress::Progress;
use crate::repo::Repository;
use futures::StreamExt;
use futures::stream::BoxStream;

/// A source whose rows come as values.
pub(super) trait RowSource {
    /// The rows of plan `i`, in the plan's column order.
    fn rows<'s>(&'s mut self, i: usize, plan: &'s Plan) -> BoxStream<'s, Result<Vec<Value>>>;
}

/// Reads each table of a `values` source into the pipeline: as a delta against its
/// parent when it has one, read again whole when the delta has to be abandoned.
pub(super) async fn read_values<S: RowSource>(
    repo: &Repository,
    src: &mut S,
    plans: &[Plan],
    pipe: &Pipeline,
    out: &mut Vec<Streamed>,
    progress: &dyn Progress,
) -> Result<()> {
    for (i, plan) in plans.iter().enumerate() {
        let mut delta = plan.parent.is_some();
        loop {
            let mut feed = Feed::start(repo, pipe, progress, plan, false, delta).await?;
            let mut stream = src.rows(i, plan);
            while let Some(row) = stream.next().await {
                for v in &row? {
                    encode_value(&mut feed.buf, v);
                }
                feed.count_row();
                feed.send_if_full().await?;
                if feed.restart {
                    break;
                }
            }
            drop(stream);
            match feed.finish(&plan.name).await? {
                Some(s) => {
                    out.push(s);
                    break;
                }
                None => delta = false,
            }
        }
    }
    Ok(())
}
