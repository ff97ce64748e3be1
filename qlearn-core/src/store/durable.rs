//! [`Durable`]: the future of a store call's durability, for callers on an
//! async runtime that must not park a thread while a commit happens.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Result;

/// Resolves once the store call that returned it is durable (or with the
/// error that stopped the store). Until it resolves `Ok`, the call's answer
/// must not be given to anyone: acknowledged means durable.
///
/// Returned by the non-blocking calls of [`Store`](super::Store)
/// ([`Store::decide_nonblocking`](super::Store::decide_nonblocking),
/// [`Store::update_nonblocking`](super::Store::update_nonblocking)). Needs
/// no particular runtime: whoever completes the commit wakes the task.
#[must_use = "the call is not durable until this resolves"]
pub struct Durable(Option<Pin<Box<dyn Future<Output = Result<()>> + Send>>>);

impl Durable {
    /// A call that is durable already.
    pub fn ready() -> Self {
        Durable(None)
    }

    /// A call that is durable when `commit` resolves `Ok`.
    pub fn new(commit: impl Future<Output = Result<()>> + Send + 'static) -> Self {
        Durable(Some(Box::pin(commit)))
    }
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Durable(pending)"
        } else {
            "Durable(ready)"
        })
    }
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.0.as_mut() {
            None => Poll::Ready(Ok(())),
            Some(f) => {
                let r = f.as_mut().poll(cx);
                if r.is_ready() {
                    self.0 = None;
                }
                r
            }
        }
    }
}
