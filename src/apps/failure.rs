//! The one failure vocabulary of the apps' actions. An action ends in one of two ways
//! when it cannot finish: an API call failed (and the app's error mapping, which may ask
//! the API once more to tell a revoked token from a missing permission, picks the code),
//! or the step itself decided it cannot go on (no recipient, a protected person…) and
//! already knows its code. Keeping the API error as it came, with the area it touched,
//! lets the mapping run once, at the end, in [`settle`] — rather than at every call site.

use std::future::Future;

use crate::codes::Code;
use crate::domain::step::{StepError, StepOutput};

/// Why an action of an app with API error `E` and API areas `A` stopped.
#[derive(Debug)]
pub enum Failure<E, A> {
    /// A call to the app failed in `A` (users, groups, workspaces…); not yet mapped.
    Api(E, A),
    /// The step's own verdict, code chosen.
    Step(StepError),
}

/// What an action returns.
pub type ActionResult<E, A> = Result<StepOutput, Failure<E, A>>;

impl<E, A> Failure<E, A> {
    /// A failure that no retry will fix.
    pub fn fatal(code: Code, message: impl Into<String>) -> Self {
        Failure::Step(StepError::fatal(code, message))
    }
}

/// For `map_err`: a failed call in `area`, e.g. `.map_err(api(Area::Users))`.
pub fn api<E, A>(area: A) -> impl FnOnce(E) -> Failure<E, A> {
    move |err| Failure::Api(err, area)
}

impl<E, A> From<StepError> for Failure<E, A> {
    fn from(err: StepError) -> Self {
        Failure::Step(err)
    }
}

/// An action's result as the runner takes it: API errors go through the app's mapping
/// `map_api` (which may call the app, hence async); the step's own errors pass as they are.
pub async fn settle<E, A, Fut>(
    result: ActionResult<E, A>,
    map_api: impl FnOnce(E, A) -> Fut,
) -> Result<StepOutput, StepError>
where
    Fut: Future<Output = StepError>,
{
    match result {
        Ok(output) => Ok(output),
        Err(Failure::Api(err, area)) => Err(map_api(err, area).await),
        Err(Failure::Step(err)) => Err(err),
    }
}

/// The error for an action name a workflow file should not have passed (the registry
/// checks names against [`super::known_action`]); `code` is the app's catch-all.
pub fn unknown_action(code: Code, action: &str) -> StepError {
    StepError::fatal(code, format!("unknown action {action}"))
}
