//! The error-code catalog: every stable code offboard reports, with the condition that
//! raises it, whether it is retryable, a one-line message and the steps that fix it. The
//! app adapters and event intake pick a [`Code`]; the CLI (`offboard explain`), workflow
//! records and outgoing events show it; `docs/error-codes.md` is rendered from
//! [`CATALOG`], and a test keeps that page in step with this file. Suffix `-A` means a
//! connection check found the problem, `-B` that a workflow run met it, `EVT-` that an
//! incoming event was rejected before any workflow existed.

use std::fmt;
use std::str::FromStr;

/// Declares [`Code`], [`Code::ALL`] and [`Code::as_str`] from one list, so the three
/// cannot drift apart.
macro_rules! codes {
    ($($variant:ident => $text:literal,)*) => {
        /// Stable error code, shown to people and stored with failed workflows.
        ///
        /// Serialized as its text form, e.g. `"SMT-100-A"`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub enum Code {
            $(
                #[doc = concat!("`", $text, "`")]
                $variant,
            )*
        }

        impl Code {
            /// Every code, in catalog order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as written in logs, headers and docs, e.g. `SMT-100-A`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    Smt100A => "SMT-100-A",
    Smt100B => "SMT-100-B",
    Smt101A => "SMT-101-A",
    Smt101B => "SMT-101-B",
    Smt102A => "SMT-102-A",
    Smt102B => "SMT-102-B",
    Smt103A => "SMT-103-A",
    Smt103B => "SMT-103-B",
    Smt104A => "SMT-104-A",
    Smt104B => "SMT-104-B",
    Smt105A => "SMT-105-A",
    Smt105B => "SMT-105-B",
    Smt110B => "SMT-110-B",
    Smt111B => "SMT-111-B",
    Smt112B => "SMT-112-B",
    Smt113B => "SMT-113-B",
    Smt190B => "SMT-190-B",
    Smt199B => "SMT-199-B",
    Post100A => "POST-100-A",
    Post100B => "POST-100-B",
    Post101A => "POST-101-A",
    Post101B => "POST-101-B",
    Post102A => "POST-102-A",
    Post102B => "POST-102-B",
    Post103A => "POST-103-A",
    Post103B => "POST-103-B",
    Post104A => "POST-104-A",
    Post104B => "POST-104-B",
    Post105A => "POST-105-A",
    Post105B => "POST-105-B",
    Post106A => "POST-106-A",
    Post106B => "POST-106-B",
    Post110B => "POST-110-B",
    Post112B => "POST-112-B",
    Post113B => "POST-113-B",
    Post190B => "POST-190-B",
    Post199B => "POST-199-B",
    Scim100A => "SCIM-100-A",
    Scim100B => "SCIM-100-B",
    Scim101A => "SCIM-101-A",
    Scim101B => "SCIM-101-B",
    Scim102A => "SCIM-102-A",
    Scim102B => "SCIM-102-B",
    Scim103A => "SCIM-103-A",
    Scim103B => "SCIM-103-B",
    Scim112B => "SCIM-112-B",
    Scim113B => "SCIM-113-B",
    Scim114B => "SCIM-114-B",
    Scim115B => "SCIM-115-B",
    Scim116B => "SCIM-116-B",
    Scim190B => "SCIM-190-B",
    Scim199B => "SCIM-199-B",
    Evt100 => "EVT-100",
    Evt101 => "EVT-101",
    Evt102 => "EVT-102",
    Evt103 => "EVT-103",
    Evt104 => "EVT-104",
    Evt105 => "EVT-105",
    Evt106 => "EVT-106",
    Evt107 => "EVT-107",
    Wf100 => "WF-100",
}

impl Code {
    /// The code for `s`, ignoring ASCII case and surrounding whitespace.
    pub fn parse(s: &str) -> Option<Code> {
        let s = s.trim();
        Code::ALL
            .iter()
            .copied()
            .find(|code| code.as_str().eq_ignore_ascii_case(s))
    }

    /// The catalog entry for this code.
    pub fn info(self) -> &'static CodeInfo {
        // CATALOG follows the declaration order; a test holds it to that.
        &CATALOG[self as usize]
    }

    /// Whether the condition is temporary, so trying again later can succeed unchanged.
    pub fn retryable(self) -> bool {
        self.info().retryable
    }

    /// The one-line message.
    pub fn message(self) -> &'static str {
        self.info().message
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Text that is not one of the catalog's codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownCode(String);

impl fmt::Display for UnknownCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown error code {:?}", self.0)
    }
}

impl std::error::Error for UnknownCode {}

impl FromStr for Code {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Code, UnknownCode> {
        Code::parse(s).ok_or_else(|| UnknownCode(s.to_string()))
    }
}

impl From<Code> for String {
    fn from(code: Code) -> String {
        code.as_str().to_string()
    }
}

impl TryFrom<String> for Code {
    type Error = UnknownCode;

    fn try_from(s: String) -> Result<Code, UnknownCode> {
        Code::parse(&s).ok_or(UnknownCode(s))
    }
}

/// What a code means and how to fix it.
#[derive(Debug)]
pub struct CodeInfo {
    /// The code this entry describes.
    pub code: Code,
    /// What it concerns: an app (`"smartsheet"`, `"postman"`, `"scim"`), `"events"` (intake) or
    /// `"workflows"` (the engine itself).
    pub app: &'static str,
    /// When it is raised, with the HTTP status or app error code behind it.
    pub condition: &'static str,
    /// Whether the condition is temporary (see [`Code::retryable`]).
    pub retryable: bool,
    /// One line for people: what went wrong.
    pub message: &'static str,
    /// Two to six concrete steps that clear the condition, in order.
    pub remedy: &'static [&'static str],
}

/// The catalog: one entry per code, in the order of [`Code::ALL`].
pub static CATALOG: &[CodeInfo] = &[
    // ---------------------------------------------------------------- Smartsheet
    CodeInfo {
        code: Code::Smt100A,
        app: "smartsheet",
        condition: "A connection check got HTTP 401 with errorCode 1001 (no token sent) or 1002 (token not recognised) from Smartsheet.",
        retryable: false,
        message: "Smartsheet rejected the API token of this connection",
        remedy: &[
            "Make sure the environment variable named by `token_env` in this connection's section of `offboard.toml` is set for the offboard process and holds the complete token, without quotes, spaces or line breaks.",
            "Make sure `base_url` points at the region that holds the account (api.smartsheet.com, the .eu or .au host, or smartsheetgov.com); a token is only valid in its own region.",
            "If the token is wrong or lost, sign in to Smartsheet as a System Admin, open Account > Personal Settings > API Access and generate a new access token. It is displayed once only, so put it straight into that variable.",
            "Run `offboard check <connection>` and confirm that it reports OK.",
        ],
    },
    CodeInfo {
        code: Code::Smt100B,
        app: "smartsheet",
        condition: "During a run Smartsheet answered HTTP 401 with errorCode 1003 (token expired) or 1002 (token no longer valid) to a token that had passed the check.",
        retryable: false,
        message: "The Smartsheet API token stopped working (expired or revoked)",
        remedy: &[
            "Find out what ended the token: it may have been revoked under API Access, reached an expiry set by account policy, or belonged to someone who was deactivated or removed.",
            "As a System Admin, generate a replacement under Account > Personal Settings > API Access, and delete the old entry there if it is still listed. A dedicated integration admin outlives staff changes better than a personal account.",
            "Store the new token in the environment variable named by `token_env` and restart `offboard serve` so that it reads the new value.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>` for each workflow that failed with this code.",
        ],
    },
    CodeInfo {
        code: Code::Smt101A,
        app: "smartsheet",
        condition: "A connection check was refused with HTTP 403, errorCode 1004, on a `/users` request although the token's owner is a System Admin.",
        retryable: false,
        message: "The token may not list or change Smartsheet users",
        remedy: &[
            "Sign in to Smartsheet as the token's owner and confirm that Admin Center > Users opens and shows the members of the account.",
            "If the token was issued through OAuth rather than under API Access, it needs the READ_USERS and ADMIN_USERS scopes; issue it again with both.",
            "Ask another System Admin whether user management is restricted for this account; a plan that lacks the API is reported as SMT-103-A instead.",
            "If the access cannot be given, use a token generated by another System Admin who can manage users, store it under `token_env`, and run `offboard check <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt101B,
        app: "smartsheet",
        condition: "During a run a `/users` request was refused with HTTP 403, errorCode 1004, while `GET /users/me` still shows the token's owner as a System Admin.",
        retryable: false,
        message: "The token lost its access to Smartsheet users",
        remedy: &[
            "The role is intact, so ask who narrowed the token owner's user-management rights, or whether the token's OAuth scopes were reduced.",
            "Restore access to Admin Center > Users for that person, or the READ_USERS and ADMIN_USERS scopes for an OAuth token.",
            "Alternatively, generate a token as another System Admin and store it in the variable named by `token_env`.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt102A,
        app: "smartsheet",
        condition: "A connection check was refused with HTTP 403, errorCode 1004, on a `/groups` request.",
        retryable: false,
        message: "The token may not list or change Smartsheet groups",
        remedy: &[
            "Confirm that the token's owner can open Admin Center > Groups and sees every group of the account, not only their own.",
            "offboard hands the leaver's groups to the recipient, which means editing groups that other people own: a System Admin may do that, a Group Admin only for their own groups.",
            "For an OAuth token, include the READ_USERS and ADMIN_USERS scopes, which also cover groups.",
            "Check in Admin Center > Billing that the plan includes group management (Business or Enterprise).",
            "Run `offboard check <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt102B,
        app: "smartsheet",
        condition: "During a run a `/groups` request was refused with HTTP 403, errorCode 1004, while `GET /users/me` still shows the token's owner as a System Admin.",
        retryable: false,
        message: "The token lost its access to Smartsheet groups",
        remedy: &[
            "Ask who changed the token owner's rights over groups, or whether the token's OAuth scopes were reduced.",
            "Restore group management for that person in Admin Center > Groups, or use a token generated by another System Admin and store it under `token_env`.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt103A,
        app: "smartsheet",
        condition: "A connection check got HTTP 403 with errorCode 1013: the account's plan does not include the API or the operation that was tried.",
        retryable: false,
        message: "The Smartsheet plan does not include the API access offboarding needs",
        remedy: &[
            "Open Admin Center > Billing as a System Admin and note which plan the account is on.",
            "Managing users through the API takes a Business or Enterprise plan; upgrade, or ask your Smartsheet account manager which plan fits.",
            "If your organisation already has a Business or Enterprise account, make sure the token comes from an admin of that account and not of a trial or personal one.",
            "Run `offboard check <connection>` once the plan has changed.",
        ],
    },
    CodeInfo {
        code: Code::Smt103B,
        app: "smartsheet",
        condition: "During a run Smartsheet answered HTTP 403 with errorCode 1013: a plan that allowed the API before no longer does, for example after the subscription lapsed or was downgraded.",
        retryable: false,
        message: "The Smartsheet plan no longer allows the API access offboarding needs",
        remedy: &[
            "Look up the plan's status and end date in Admin Center > Billing.",
            "Renew or restore the Business or Enterprise subscription and bring the billing details up to date.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt104A,
        app: "smartsheet",
        condition: "A connection check got HTTP 400 with an errorCode from 5000 to 5999 (other than 5666) about the account's status: the account is locked or suspended.",
        retryable: false,
        message: "The Smartsheet account is locked or suspended",
        remedy: &[
            "Sign in to Smartsheet as a System Admin, read the notice shown for the account, and check Admin Center > Billing for a failed payment.",
            "Settle whatever caused the lock (billing, a security review, a suspension) and ask Smartsheet Support to reactivate the account, quoting the refId from the error.",
            "Run `offboard check <connection>` once the account is active again.",
        ],
    },
    CodeInfo {
        code: Code::Smt104B,
        app: "smartsheet",
        condition: "During a run Smartsheet answered HTTP 400 with an errorCode from 5000 to 5999 (other than 5666) about the account's status: the account was locked or suspended after the run began.",
        retryable: false,
        message: "The Smartsheet account was locked or suspended during the run",
        remedy: &[
            "Nothing more is changed in Smartsheet while the account is locked; the workflow keeps the steps it already finished.",
            "Find the cause with a System Admin (the account notice, Admin Center > Billing) and have Smartsheet Support reactivate the account, quoting the refId that `offboard history <workflow-id>` shows.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt105A,
        app: "smartsheet",
        condition: "A connection check found `admin: false` in the answer to `GET /users/me`: the token belongs to someone who is not a System Admin.",
        retryable: false,
        message: "The token's owner is not a Smartsheet System Admin",
        remedy: &[
            "Removing users, moving their sheets and reassigning their groups are System Admin actions, so the token must come from a System Admin.",
            "Have a current System Admin give the token's owner that role in Admin Center > Users.",
            "Or have a System Admin generate a token under Account > Personal Settings > API Access and store it in the variable named by `token_env`.",
            "Prefer an account that will not itself be offboarded, such as a dedicated integration admin.",
            "Run `offboard check <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt105B,
        app: "smartsheet",
        condition: "During a run a request was refused with HTTP 403, errorCode 1004, and `GET /users/me` now shows `admin: false`: the token's owner lost the System Admin role.",
        retryable: false,
        message: "The token's owner is no longer a Smartsheet System Admin",
        remedy: &[
            "Find out who removed the role and whether that was intended; if the token's owner is leaving, replace the token in any case.",
            "Give the role back in Admin Center > Users, or generate a token as another System Admin and store it under `token_env`.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt110B,
        app: "smartsheet",
        condition: "Handing the leaver's sheets or groups to the recipient failed: errorCode 1019 (no such user), 1021 (user of another Smartsheet account), 1107 (recipient is not a Group Admin), 1121 (the leaver owns groups but no recipient was given) or 1018 (recipient is the leaver).",
        retryable: false,
        message: "The transfer recipient cannot take over the leaver's sheets or groups",
        remedy: &[
            "Read the errorCode of the failed step in `offboard history <workflow-id>` to see which case applies.",
            "1019 or 1021: the recipient must be an active user of this same Smartsheet account (Admin Center > Users); add or move them there first.",
            "1107: give the recipient the Group Admin role, since only a Group Admin can own groups.",
            "1121 or 1018: the leaver owns groups, so name a recipient, and one other than the leaver.",
            "If the recipient is right and now fixed, run `offboard retry <workflow-id>`.",
            "If someone else should receive the items, send a new event, which gets a new id: `offboard submit --email <leaver> --transfer-to <recipient> --connection <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt111B,
        app: "smartsheet",
        condition: "Changing or removing the user failed with errorCode 5666: the user is managed by a directory or identity provider, which owns the account's lifecycle.",
        retryable: false,
        message: "The user is managed by an identity provider, so the Smartsheet API cannot remove them",
        remedy: &[
            "Removal outside offboard may leave the leaver's sheets where they are; if the leaver owns sheets or groups, have a System Admin transfer them in Admin Center first.",
            "Remove or deactivate the person in the identity provider that provisions Smartsheet, or unassign them from the Smartsheet application there.",
            "Once the provider has synced, confirm in Admin Center > Users that the user is gone or deactivated.",
            "Run `offboard retry <workflow-id>`: steps the provider already carried out count as done, and the workflow confirms the result.",
        ],
    },
    CodeInfo {
        code: Code::Smt112B,
        app: "smartsheet",
        condition: "Before its first write, or again right before a later step's write (the rules checked are those of the configuration the driving process runs with, so a `protected` pattern added while a workflow waits on a retry still stops it), the workflow found that the person is protected on this connection: they own the token offboard uses, they are a System Admin and the connection does not set `allow_admins = true`, or their email matches one of the connection's `protected` patterns. The step that found it changed nothing; what earlier steps did is in `offboard history`.",
        retryable: false,
        message: "The person is protected: offboard will not remove or downgrade them here",
        remedy: &[
            "Run `offboard show <workflow-id>`: the error message says which rule applied.",
            "If the request is a mistake (a misfiring HR feed, a test event), leave the workflow failed; when the refusal came at `find-user` nothing was changed in Smartsheet, otherwise `offboard history <workflow-id>` lists the earlier steps' changes to undo by hand.",
            "If the person really leaves, a Smartsheet System Admin removes them by hand in Admin Center, after taking back their System Admin role and, if they own offboard's token, after giving offboard a token of another System Admin.",
            "To let offboard do it instead, change the connection (`allow_admins = true`, or the `protected` list), restart `offboard serve` and run `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Smt113B,
        app: "smartsheet",
        condition: "A recheck after the end (the definition's `recheck_after`) ran the workflow's `find-user` lookup again, with no write, and found the person in Smartsheet again: the same user id is active again (reactivated, as an identity provider's push or a SCIM re-activation does) or a new user has their email (re-created, as Smartsheet's user auto-provisioning or an admin's invitation does). The workflow stays `completed` with its outcome; the recheck is in `offboard history` and a `workflow.access_reappeared` event was published.",
        retryable: false,
        message: "Access came back after offboarding: the person has a Smartsheet account again",
        remedy: &[
            "Run `offboard show <workflow-id>`: the last recheck says whether the account was reactivated or re-created, and `offboard history <workflow-id>` lists the entitlements seen.",
            "Remove the person's assignment at its source, not only in Smartsheet: unassign them from the Smartsheet application in the identity provider (Okta, Entra ID, Google), or turn off user auto-provisioning for their email domain in Admin Center > Settings.",
            "Then remove the account again: send a new offboarding event for the person on this connection (`offboard submit --email <leaver> --connection <connection>`), which gets a new id.",
        ],
    },
    CodeInfo {
        code: Code::Smt190B,
        app: "smartsheet",
        condition: "Smartsheet kept answering HTTP 429 (errorCode 4003), a 5xx status or errorCode 4000, 4001, 4002 or 4004, or timed out or dropped the connection, through every retry: each call is retried on its own for up to a minute, then the step on its durable timer until its attempts ran out (over an hour with the shipped policies); a connection check meeting such an answer reports it too.",
        retryable: true,
        message: "Smartsheet stayed unavailable or rate-limited through every retry",
        remedy: &[
            "Check Smartsheet's status page and whether the offboard host can reach `base_url` (proxy, firewall, DNS).",
            "If `offboard history <workflow-id>` shows 429 or errorCode 4003, other tools using the same token may be spending the rate limit; lower `requests_per_minute` for this connection in `offboard.toml`.",
            "Once Smartsheet answers normally, run `offboard retry <workflow-id>`; it resumes at the step that failed.",
            "If outages often outlast the retries, raise the step's maximum attempts or maximum interval in its workflow file under `workflows/`.",
        ],
    },
    CodeInfo {
        code: Code::Smt199B,
        app: "smartsheet",
        condition: "Smartsheet answered with an error response (HTTP status and errorCode) that no other SMT code covers, or with a redirect (3xx), which offboard never follows so that its token is sent to `base_url` only (the message names the redirect's target, without its query); it is not retried. A connection check meeting a redirect reports it too.",
        retryable: false,
        message: "Smartsheet returned an error that no specific code covers",
        remedy: &[
            "Run `offboard history <workflow-id>` and read the HTTP status, errorCode, message and refId recorded for the failed step.",
            "Look the errorCode up in Smartsheet's API error reference to learn what the request was missing.",
            "Fix the cause in Smartsheet, in the event or in `offboard.toml`, then run `offboard retry <workflow-id>`.",
            "If the message says `a redirect to`, `base_url` points at an address that forwards (an old host name, http instead of https, a proxy): set `base_url` in `offboard.toml` to the address the redirect names, if you trust it, and run `offboard check`.",
            "If the error still makes no sense, report it to Smartsheet Support with the refId.",
        ],
    },
    // ---------------------------------------------------------------- Postman
    CodeInfo {
        code: Code::Post100A,
        app: "postman",
        condition: "A connection check got HTTP 401 from Postman (such as `AuthenticationError` or an invalid or missing API key) for the key sent in `X-Api-Key`.",
        retryable: false,
        message: "Postman rejected the API key of this connection",
        remedy: &[
            "Make sure the environment variable named by `token_env` in this connection's section of `offboard.toml` holds the whole key (it begins with `PMAK-`) and nothing else.",
            "Make sure `base_url` matches the team's region: `https://api.getpostman.com` for US teams, `https://api.eu.postman.com` for EU teams.",
            "If the key is wrong or lost, sign in to Postman as a Team Admin, open Settings > API Keys and choose Generate API Key; copy it immediately, as it is not displayed again.",
            "SCIM calls use the team's separate SCIM API key, read from the variable named by `token_env` with `_SCIM` appended (e.g. `POSTMAN_API_KEY_SCIM`); set it when the team's SCIM key differs from the API key.",
            "Run `offboard check <connection>` and confirm that it reports OK.",
        ],
    },
    CodeInfo {
        code: Code::Post100B,
        app: "postman",
        condition: "During a run Postman answered HTTP 401 to a key that had passed the check: the key expired or was deleted, or its owner was deactivated or left the team.",
        retryable: false,
        message: "The Postman API key stopped working (expired or revoked)",
        remedy: &[
            "Open Settings > API Keys as the key's owner: is the key still there, and not disabled or past its expiry date? Team settings can make keys expire after a fixed time.",
            "A key dies with its owner's membership; if the owner was deactivated or removed, create the replacement as another Team Admin, ideally a dedicated integration account.",
            "Store the new key in the variable named by `token_env` and restart `offboard serve` so that it reads the new value.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>` for each workflow that failed with this code.",
        ],
    },
    CodeInfo {
        code: Code::Post101A,
        app: "postman",
        condition: "A connection check was refused with HTTP 403 on the team's user endpoints (`/users`, `/scim/v2/Users`).",
        retryable: false,
        message: "The API key's owner may not list or manage Postman team members",
        remedy: &[
            "A key acts with the rights of whoever generated it, so check that person's team role in Postman's team member list.",
            "Removing people from a team takes the Admin team role; Billing or Developer roles are not enough.",
            "Have a Team Admin grant the role, or generate a key as a Team Admin and store it under `token_env`.",
            "Run `offboard check <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Post101B,
        app: "postman",
        condition: "During a run a request on the team's user endpoints (`/users`, `/scim/v2/Users`) was refused with HTTP 403 after the same key had been allowed.",
        retryable: false,
        message: "The API key's owner lost the right to manage Postman team members",
        remedy: &[
            "Ask who changed the key owner's team role; managing members needs the Admin team role.",
            "Give the role back, or generate a key as another Team Admin and store it under `token_env`.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Post102A,
        app: "postman",
        condition: "A connection check was refused with HTTP 403 on the workspace endpoints (`/workspaces`).",
        retryable: false,
        message: "The API key's owner may not read or manage Postman workspaces",
        remedy: &[
            "offboard has to see every workspace the leaver belongs to, so the key's owner should be a Team Admin, or at least Workspace Admin of those workspaces.",
            "Check in Postman that the key's owner still sees the team's workspaces and was not taken out of them.",
            "Grant the missing role, or generate a key as a Team Admin and store it under `token_env`.",
            "Run `offboard check <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Post102B,
        app: "postman",
        condition: "During a run a request on the workspace endpoints (`/workspaces`) was refused with HTTP 403 after the same key had been allowed.",
        retryable: false,
        message: "The API key's owner lost access to Postman workspaces",
        remedy: &[
            "Ask who changed the key owner's team role or removed them from workspaces.",
            "Restore Team Admin (or Workspace Admin on the affected workspaces), or generate a key as another Team Admin and store it under `token_env`.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Post103A,
        app: "postman",
        condition: "A connection check was refused with HTTP 403 on the role endpoints (`/workspaces-roles`, `/workspaces/{id}/roles`).",
        retryable: false,
        message: "The API key's owner may not read or change Postman workspace roles",
        remedy: &[
            "Changing who holds which role in a workspace takes Team Admin, or Workspace Admin of that workspace; check the key owner's roles.",
            "Check under Team > Settings > Plan & Billing that the team's plan includes workspace role management.",
            "Grant the missing role, or generate a key as a Team Admin and store it under `token_env`.",
            "Run `offboard check <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Post103B,
        app: "postman",
        condition: "During a run a request on the role endpoints (`/workspaces-roles`, `/workspaces/{id}/roles`) was refused with HTTP 403 after the same key had been allowed.",
        retryable: false,
        message: "The API key's owner lost the right to change Postman workspace roles",
        remedy: &[
            "Ask who changed the key owner's team or workspace roles.",
            "Restore Team Admin, or generate a key as another Team Admin and store it under `token_env`.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Post104A,
        app: "postman",
        condition: "A connection check was refused with HTTP 403 on `/audit/logs` although the team is on the Enterprise plan.",
        retryable: false,
        message: "The API key's owner may not read the Postman team's audit logs",
        remedy: &[
            "Only a Team Admin can read the team's audit logs; check the key owner's team role.",
            "Confirm in Postman that Team > Settings > Audit Logs opens for that person.",
            "Grant the role, or generate a key as a Team Admin and store it under `token_env`.",
            "Run `offboard check <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Post104B,
        app: "postman",
        condition: "During a run `/audit/logs` was refused with HTTP 403, on an Enterprise team, after the same key had been allowed.",
        retryable: false,
        message: "The API key's owner lost access to the Postman team's audit logs",
        remedy: &[
            "Ask who took the Team Admin role away from the key's owner.",
            "Give the role back, or generate a key as another Team Admin and store it under `token_env`.",
            "Run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Post105A,
        app: "postman",
        condition: "A connection check found `/audit/logs` refused because the team is not on the Enterprise plan. This is a warning: offboarding works, but no audit-log evidence is collected.",
        retryable: false,
        message: "Warning: without the Postman Enterprise plan no audit-log evidence is collected",
        remedy: &[
            "Nothing blocks offboarding: workflows on this connection run normally, they only record no audit-log evidence from Postman.",
            "If that evidence is required, move the team to Enterprise under Team > Settings > Plan & Billing.",
            "Run `offboard check <connection>`; the warning disappears once audit logs are readable.",
        ],
    },
    CodeInfo {
        code: Code::Post105B,
        app: "postman",
        condition: "During a run `/audit/logs` was refused because the team is no longer on the Enterprise plan (it ended or was downgraded) after audit logs had been readable.",
        retryable: false,
        message: "The Postman team's Enterprise plan ended, so its audit logs cannot be read",
        remedy: &[
            "Look under Team > Settings > Plan & Billing for the plan's status and end date.",
            "If the audit evidence is required, renew the Enterprise subscription and bring the billing details up to date.",
            "Run `offboard check <connection>` (it reports POST-105-A as a warning while audit logs are unavailable), then `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Post106A,
        app: "postman",
        condition: "A connection check found that the key's user is in no team: `GET /me` answers `teamId: 0` (Postman's documented value) or names no team, or the team's endpoints say the team does not exist.",
        retryable: false,
        message: "The Postman team behind this API key no longer exists",
        remedy: &[
            "Sign in to Postman as the key's owner and see which team they belong to; the team may have been deleted or merged, or the owner removed from it.",
            "Generate a key as a Team Admin of the team that should be offboarded and store it under `token_env`; if that team lives in the other region, change `base_url` too.",
            "Run `offboard check <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Post106B,
        app: "postman",
        condition: "During a run the team stopped existing for the key: a refusal (e.g. SCIM's 400 \"This Postman team doesn't exist anymore.\") after which `GET /me` answers `teamId: 0` or names no team.",
        retryable: false,
        message: "The Postman team of this connection disappeared during the run",
        remedy: &[
            "Ask your Postman admins whether the team was deleted, merged into another team, or whether the key's owner was removed from it.",
            "If it was merged, generate a key as a Team Admin of the surviving team, store it under `token_env`, run `offboard check <connection>`, then `offboard retry <workflow-id>`.",
            "If the team is gone for good, the leaver's access went with it: leave the workflow failed and remove the connection from `offboard.toml`.",
        ],
    },
    CodeInfo {
        code: Code::Post110B,
        app: "postman",
        condition: "The `transfer_to` person cannot receive the leaver's items: they are not a member of the team (absent from `GET /users`) or their membership is not active.",
        retryable: false,
        message: "The transfer recipient is not an active member of the Postman team",
        remedy: &[
            "Check in Postman's team member list that the recipient's email belongs to an active member of this same team.",
            "Invite or reactivate the recipient, then run `offboard retry <workflow-id>`.",
            "If someone else should receive the items, send a new event, which gets a new id: `offboard submit --email <leaver> --transfer-to <recipient> --connection <connection>`.",
        ],
    },
    CodeInfo {
        code: Code::Post112B,
        app: "postman",
        condition: "Before its first write, or again right before a later step's write (the rules checked are those of the configuration the driving process runs with, so a `protected` pattern added while a workflow waits on a retry still stops it), the workflow found that the person is protected on this connection: they own the API key offboard uses, they are a team Admin and the connection does not set `allow_admins = true`, or their email matches one of the connection's `protected` patterns. The step that found it changed nothing; what earlier steps did is in `offboard history`.",
        retryable: false,
        message: "The person is protected: offboard will not remove or downgrade them here",
        remedy: &[
            "Run `offboard show <workflow-id>`: the error message says which rule applied.",
            "If the request is a mistake (a misfiring HR feed, a test event), leave the workflow failed; when the refusal came at `find-member` nothing was changed in Postman, otherwise `offboard history <workflow-id>` lists the earlier steps' changes to undo by hand.",
            "If the person really leaves, a Postman team Admin removes them by hand in Team Settings, after taking back their Admin role and, if offboard's API key is theirs, after giving offboard a key of another Admin.",
            "To let offboard do it instead, change the connection (`allow_admins = true`, or the `protected` list), restart `offboard serve` and run `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Post113B,
        app: "postman",
        condition: "A recheck after the end (the definition's `recheck_after`) ran the workflow's `find-member` lookup again, with no write, and found the person in the Postman team again: the same member is active again (reactivated, as an identity provider's SCIM push does) or a new member has their email (re-created, as just-in-time SSO provisioning or an admin's invitation does). The workflow stays `completed` with its outcome; the recheck is in `offboard history` and a `workflow.access_reappeared` event was published.",
        retryable: false,
        message: "Access came back after offboarding: the person is a Postman team member again",
        remedy: &[
            "Run `offboard show <workflow-id>`: the last recheck says whether the member was reactivated or re-created, and `offboard history <workflow-id>` lists the entitlements seen.",
            "Remove the person's assignment at its source, not only in Postman: unassign them from the Postman application in the identity provider that provisions it through SCIM or SSO, or take their domain out of just-in-time provisioning.",
            "Then remove the member again: send a new offboarding event for the person on this connection (`offboard submit --email <leaver> --connection <connection>`), which gets a new id.",
        ],
    },
    CodeInfo {
        code: Code::Post190B,
        app: "postman",
        condition: "Postman kept answering HTTP 429 or a 5xx status, or timed out or dropped the connection, through every retry: each call is retried on its own for up to a minute, then the step on its durable timer until its attempts ran out (over an hour with the shipped policies); a connection check meeting such an answer reports it too.",
        retryable: true,
        message: "Postman stayed unavailable or rate-limited through every retry",
        remedy: &[
            "Check Postman's status page and whether the offboard host can reach `base_url` (proxy, firewall, DNS).",
            "If `offboard history <workflow-id>` shows 429, other tools on the same key may be spending the rate limit, or the team's plan may have used up its API calls for the month; lower `requests_per_minute` for this connection in `offboard.toml`.",
            "Once Postman answers normally, run `offboard retry <workflow-id>`; it resumes at the step that failed.",
            "If outages often outlast the retries, raise the step's maximum attempts or maximum interval in its workflow file under `workflows/`.",
        ],
    },
    CodeInfo {
        code: Code::Post199B,
        app: "postman",
        condition: "Postman answered with an error response (HTTP status and error name) that no other POST code covers, or with a redirect (3xx), which offboard never follows so that its API and SCIM keys are sent to `base_url` only (the message names the redirect's target, without its query); it is not retried. A connection check meeting a redirect reports it too.",
        retryable: false,
        message: "Postman returned an error that no specific code covers",
        remedy: &[
            "Run `offboard history <workflow-id>` and read the HTTP status, error name and message recorded for the failed step.",
            "Compare them with the Postman API reference for the endpoint that failed to learn what the request was missing.",
            "Fix the cause in Postman, in the event or in `offboard.toml`, then run `offboard retry <workflow-id>`.",
            "If the message says `a redirect to`, `base_url` points at an address that forwards (an old host name, http instead of https, a proxy): set `base_url` in `offboard.toml` to the address the redirect names, if you trust it, and run `offboard check`.",
            "If the error still makes no sense, report it to Postman support with the recorded response.",
        ],
    },
    // ---------------------------------------------------------------- SCIM apps
    CodeInfo {
        code: Code::Scim100A,
        app: "scim",
        condition: "A connection check of an `app = \"scim\"` connection got HTTP 401 from the provider (or its token variable is not set): the bearer token in the variable named by `token_env` is wrong, expired or revoked.",
        retryable: false,
        message: "The SCIM provider rejected the token",
        remedy: &[
            "Create a new SCIM token in the provider's admin console (Slack: the SCIM-scoped OAuth token of an org or workspace owner; GitHub EMU: a personal access token of the setup user with the `scim:enterprise` scope; Okta-style directories: the app's API token).",
            "Put it in the environment variable the connection's `token_env` names, then restart `offboard serve`.",
            "Run `offboard check <connection>` until it prints OK.",
        ],
    },
    CodeInfo {
        code: Code::Scim100B,
        app: "scim",
        condition: "During a run, the SCIM provider answered HTTP 401 (or the token variable was no longer set): the token stopped working after the connection was checked, for instance because it was revoked or its owner lost the right to provision.",
        retryable: false,
        message: "The SCIM token stopped working during a run",
        remedy: &[
            "Create a new SCIM token in the provider's admin console and put it in the variable named by `token_env`; restart `offboard serve`.",
            "Run `offboard check <connection>` until it prints OK.",
            "Run `offboard retry <workflow-id>`: every step is safe to repeat, so the workflow resumes at the step that failed.",
        ],
    },
    CodeInfo {
        code: Code::Scim101A,
        app: "scim",
        condition: "A connection check got HTTP 403 when reading `/Users` or `/ServiceProviderConfig`: the token is valid but may not read users.",
        retryable: false,
        message: "The SCIM token may not read users",
        remedy: &[
            "Give the token's owner the provider's provisioning role (an org owner or admin; for GitHub EMU the setup user with `scim:enterprise`).",
            "Run `offboard check <connection>` until it prints OK.",
        ],
    },
    CodeInfo {
        code: Code::Scim101B,
        app: "scim",
        condition: "During a run, the provider answered HTTP 403 on `/Users`: the token may no longer read or change users (the message carries the SCIM error's `scimType` and `detail`, escaped).",
        retryable: false,
        message: "The SCIM token may no longer read or change users",
        remedy: &[
            "Run `offboard show <workflow-id>` and read the provider's `detail`.",
            "Give the token's owner the provisioning role again, or use a token of an owner who has it.",
            "Run `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Scim102A,
        app: "scim",
        condition: "A connection with `remove_from_groups = true` got HTTP 403 when reading `/Groups` during its check: the token may not read groups.",
        retryable: false,
        message: "The SCIM token may not read groups",
        remedy: &[
            "Give the token's owner the right to manage groups at the provider.",
            "Or set `remove_from_groups = false` for the connection if the provider empties memberships itself when a user is deactivated.",
            "Run `offboard check <connection>` until it prints OK.",
        ],
    },
    CodeInfo {
        code: Code::Scim102B,
        app: "scim",
        condition: "During a run, the provider answered HTTP 403 on `/Groups`: reading a group or taking the user out of it was refused.",
        retryable: false,
        message: "The SCIM token may no longer read or change groups",
        remedy: &[
            "Run `offboard show <workflow-id>` and read the provider's `detail`.",
            "Give the token's owner the right to manage groups, or set `remove_from_groups = false` and restart `offboard serve`.",
            "Run `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Scim103A,
        app: "scim",
        condition: "A connection check found that the provider lacks what the connection needs: its `/ServiceProviderConfig` says filtering is not supported (offboard finds people with a filter), it answers 404 or 501 on `/Users`, or its configuration is not SCIM JSON.",
        retryable: false,
        message: "The SCIM provider lacks a feature this connection needs",
        remedy: &[
            "Check that `base_url` is the provider's SCIM root (the URL that `/ServiceProviderConfig` and `/Users` are under, e.g. `https://api.slack.com/scim/v2`).",
            "Check the provider's SCIM documentation: offboard needs filtering on the `match` attribute and either PATCH or PUT on users.",
            "Run `offboard check <connection>` until it prints OK.",
        ],
    },
    CodeInfo {
        code: Code::Scim103B,
        app: "scim",
        condition: "During a run, the provider refused what offboard needs: filtering is not supported, or deactivation is impossible (PATCH is not supported and the PUT of the user was answered 405 or 501, or PATCH was refused with 501).",
        retryable: false,
        message: "The SCIM provider does not support a request the workflow needs",
        remedy: &[
            "Run `offboard show <workflow-id>`: the message names the request refused.",
            "If the provider can delete but not deactivate users, set `offboard = \"delete\"` for the connection and restart `offboard serve`.",
            "Otherwise deactivate the user in the provider's console, then run `offboard retry <workflow-id>`; the steps see the user inactive and finish.",
        ],
    },
    CodeInfo {
        code: Code::Scim112B,
        app: "scim",
        condition: "Before its first write, or again right before a later step's write (under the rules of the configuration the driving process runs with), the workflow found that the person is protected on this connection: their `userName` or an email matches one of the connection's `protected` patterns, or they are the token's own user (as `/Me` reports, when the provider offers it). The step that found it changed nothing.",
        retryable: false,
        message: "The person is protected: offboard will not deactivate or remove them here",
        remedy: &[
            "Run `offboard show <workflow-id>`: the error message says which rule applied.",
            "If the request is a mistake, leave the workflow failed; `offboard history <workflow-id>` lists what earlier steps changed (group memberships) to restore by hand.",
            "If the person really leaves, change the connection's `protected` list (or give offboard a token of another user), restart `offboard serve` and run `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Scim113B,
        app: "scim",
        condition: "A recheck after the end (the definition's `recheck_after`) ran the workflow's `find-user` lookup again, with no write, and found an active account for the person: the same SCIM user is active again (an identity provider re-activated it) or a new user matches. The workflow stays `completed`; the recheck is in `offboard history` and a `workflow.access_reappeared` event was published.",
        retryable: false,
        message: "Access came back after offboarding: the person has an active SCIM account again",
        remedy: &[
            "Run `offboard show <workflow-id>`: the last recheck says whether the user was re-activated or re-created.",
            "Unassign the person from the app in the identity provider that provisions it, so it stops pushing the account back.",
            "Then send a new offboarding event for the person on this connection (`offboard submit --email <leaver> --connection <connection>`).",
        ],
    },
    CodeInfo {
        code: Code::Scim114B,
        app: "scim",
        condition: "The filter on the connection's `match` attribute returned more than one user that matches the value exactly (userName and emails compared without case, externalId exactly). offboard does not guess which account is the person's: nothing was written.",
        retryable: false,
        message: "More than one SCIM account matches the person; nothing was changed",
        remedy: &[
            "Run `offboard show <workflow-id>`: the message lists the matching SCIM ids.",
            "Find out in the provider's console which account is the person's, and merge or remove the duplicates, or match on a unique attribute (`match = \"externalId\"` with the HR employee id).",
            "Send a new event for the person (`offboard submit --email <leaver> --connection <connection>`), which gets a new id.",
        ],
    },
    CodeInfo {
        code: Code::Scim115B,
        app: "scim",
        condition: "The provider refused a change with HTTP 400 or 409 (or 412 twice in a row): the message carries the SCIM error's `scimType` (e.g. `mutability`, `invalidValue`, `uniqueness`) and `detail`, escaped. Typical: the provider will not deactivate an owner or an account managed elsewhere.",
        retryable: false,
        message: "The SCIM provider refused the change",
        remedy: &[
            "Run `offboard show <workflow-id>` and read the `scimType` and `detail`.",
            "Fix the cause at the provider (transfer an ownership, unlink the account from the directory that manages it).",
            "Run `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Scim116B,
        app: "scim",
        condition: "The connection matches on an attribute the event does not carry: `match = \"externalId\"` needs `data.person.employee_id`, and the event had none. Nothing was read or written.",
        retryable: false,
        message: "The event lacks the value this SCIM connection matches on",
        remedy: &[
            "Have the HR system send `employee_id` in `data.person`, or change the connection's `match` to `userName` or `email`.",
            "Then send the event again with a new id.",
        ],
    },
    CodeInfo {
        code: Code::Scim190B,
        app: "scim",
        condition: "The SCIM provider kept answering HTTP 429 or a 5xx status, or timed out or dropped the connection, through every retry (each call retried for up to a minute honouring `Retry-After`, then the step on its durable timer); a connection check meeting such an answer reports it too.",
        retryable: true,
        message: "The SCIM provider stayed unavailable or rate-limited through every retry",
        remedy: &[
            "Check the provider's status page and whether the offboard host can reach `base_url`.",
            "If `offboard history <workflow-id>` shows 429, lower `requests_per_minute` for this connection to the provider's documented SCIM rate limit.",
            "Once the provider answers normally, run `offboard retry <workflow-id>`.",
        ],
    },
    CodeInfo {
        code: Code::Scim199B,
        app: "scim",
        condition: "The provider answered something no other SCIM code covers: an error status without a more specific code, a body that is not SCIM JSON, a response larger than 8 MiB, a list that keeps paging (the same page again, or more than 1000 pages), or a redirect (never followed, so the token goes to `base_url` only).",
        retryable: false,
        message: "The SCIM provider returned a response no specific code covers",
        remedy: &[
            "Run `offboard history <workflow-id>` and read the status and message recorded for the failed step.",
            "Compare them with the provider's SCIM documentation; if the message says `a redirect to`, fix `base_url`.",
            "Fix the cause, then run `offboard retry <workflow-id>`.",
        ],
    },
    // ---------------------------------------------------------------- Events
    CodeInfo {
        code: Code::Evt100,
        app: "events",
        condition: "A message on the request queue could not be read: its body is not valid JSON, or it is larger than 256 KiB.",
        retryable: false,
        message: "The event body is not JSON or is larger than 256 KiB",
        remedy: &[
            "Read the rejected message in the `offboard.requests.dead` queue; its `x-error-code` and `x-error-message` headers say what was wrong.",
            "Make the HR integration publish exactly one UTF-8 JSON object per message, with content-type `application/cloudevents+json` or `application/json`.",
            "Keep the body under 256 KiB: an event names one person and a recipient, not attachments or bulk exports.",
            "Publish the corrected event again; `offboard submit --file EVENT.json` does that by hand for a single event.",
        ],
    },
    CodeInfo {
        code: Code::Evt101,
        app: "events",
        condition: "The body is JSON but not a CloudEvents 1.0 event in structured mode (`specversion` is not \"1.0\", or `id`, `source` or `type` is missing or empty), or its `type` is neither `offboarding.requested` nor `license.reclaim.requested`.",
        retryable: false,
        message: "The message is not a CloudEvents 1.0 event of a type offboard handles",
        remedy: &[
            "Read the rejected message in the `offboard.requests.dead` queue; its `x-error-code` and `x-error-message` headers say what was wrong.",
            "Put `specversion` (\"1.0\"), a unique `id`, `source` and `type` at the top level of the JSON body, not in AMQP headers.",
            "Use `offboarding.requested` to remove the account, or `license.reclaim.requested` to keep it and take the paid roles away, and publish with that type as the routing key.",
            "Fix the publisher and send the event again, by hand if needed with `offboard submit --file EVENT.json`.",
        ],
    },
    CodeInfo {
        code: Code::Evt102,
        app: "events",
        condition: "A required field is missing or a field holds a bad value: no `data` or `data.person.email`, an email that is not an address, `transfer_to` without an email, naming the leaver or outside `[intake] recipient_domains`, `connections` not a non-empty list of names, `not_before` not an RFC 3339 time, or a value over its length limit (`id` and `source` 256 bytes, emails 254, `employee_id` 256, `reason` 1,024, a connection name 64, at most 32 connections).",
        retryable: false,
        message: "A required event field is missing or invalid",
        remedy: &[
            "Read the rejected message in the `offboard.requests.dead` queue; the `x-error-message` header names the field at fault.",
            "Map the leaver's work email into `data.person.email`, and make sure the HR field behind it is filled in for every kind of leaver, contractors included.",
            "Give `transfer_to.email` only for a recipient other than the leaver, at one of the domains in `[intake] recipient_domains` when that is set, and leave out optional fields you do not use.",
            "Keep ids and other values within their limits (README, \"Signed events\"): an id of thousands of characters is a publisher bug, not a key.",
            "Write `not_before` as an RFC 3339 time with a zone, for example 2026-11-21T00:00:00Z.",
            "Fix the publisher and send the event again, by hand if needed with `offboard submit --file EVENT.json`.",
        ],
    },
    CodeInfo {
        code: Code::Evt103,
        app: "events",
        condition: "`data.connections` names a connection that has no `[connections.<name>]` section in `offboard.toml`.",
        retryable: false,
        message: "The event names a connection that is not configured",
        remedy: &[
            "Read the rejected message in the `offboard.requests.dead` queue; the `x-error-message` header names the unknown connection.",
            "If the name is a typo or an app offboard does not handle, fix the list the publisher sends, or leave `connections` out to mean every configured connection.",
            "If it is a new connection, add its `[connections.<name>]` section to `offboard.toml`, restart `offboard serve` and run `offboard check <name>`.",
            "Send the event again, by hand if needed with `offboard submit --file EVENT.json`.",
        ],
    },
    CodeInfo {
        code: Code::Evt104,
        app: "events",
        condition: "`[intake] allowed_sources` is set in `offboard.toml` and the event's CloudEvents `source` is not in that list.",
        retryable: false,
        message: "The event comes from a source that may not ask for offboardings",
        remedy: &[
            "Read the rejected message in the `offboard.requests.dead` queue and the `dead_letters` table; the `x-error-message` header names the source.",
            "If the source is an HR system that should be trusted, add its exact `source` value to `[intake] allowed_sources` and restart `offboard serve`.",
            "If it is not, find out who can publish to the `offboard` exchange and take that right away from them: the event was an attempt to remove someone.",
            "Send a legitimate event again from an allowed source; its id keeps it from starting anything twice.",
        ],
    },
    CodeInfo {
        code: Code::Evt105,
        app: "events",
        condition: "`[intake] signing_key_env` is set and the message has no Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`), none of its `v1,` signatures matches under the configured keys, `webhook-id` differs from the event's `id`, or `webhook-timestamp` lies further from now than `[intake] signature_tolerance_secs` (a replayed message); or it carries only the legacy `x-offboard-signature` without `[intake] accept_legacy_signatures = true`.",
        retryable: false,
        message: "The event's signature is missing or wrong",
        remedy: &[
            "Read the rejected message in the `offboard.requests.dead` queue; an unsigned or forged event was refused before anyone was removed.",
            "Make the publisher sign every message as Standard Webhooks says: `webhook-id` the event's `id`, `webhook-timestamp` the unix time of sending, `webhook-signature` `v1,` and the base64 HMAC-SHA256 of `<id>.<timestamp>.<exact body>` under the key (README, \"Signed events\"). `offboard submit` signs when the key's variable is set.",
            "Check that publisher and `offboard serve` hold the same key (a `whsec_` value is base64 of the key bytes, any other value the bytes themselves), that both clocks are right, and that nothing between them (a proxy, a re-serialising bridge) changes the body after signing.",
            "While changing keys, name both variables in `signing_key_env` (a list), or let the publisher send one signature per key, space-separated.",
            "If nobody you know sent it, find out who can publish to the `offboard` exchange; then send legitimate events again, signed.",
        ],
    },
    CodeInfo {
        code: Code::Evt106,
        app: "events",
        condition: "The broker delivered the message as many times as the queue's delivery limit allows less one (`x-delivery-count`), each time without offboard finishing it: every consumer that took it stopped (crashed, was killed or lost its connection) before acknowledging it.",
        retryable: false,
        message: "The event was delivered again and again without being processed",
        remedy: &[
            "Read the message in the `offboard.requests.dead` queue and the `dead_letters` table (its `raw` column holds the body byte for byte).",
            "Look in the logs of the `offboard serve` processes for crashes or restarts around the time of each delivery; a message that crashes the consumer is a bug to report with the body.",
            "If the processes were only being restarted (a deploy, a crash loop with another cause), fix that and send the event again with `offboard submit --file EVENT.json`; its id keeps it from starting anything twice.",
        ],
    },
    CodeInfo {
        code: Code::Evt107,
        app: "events",
        condition: "The database refused to store the event's workflows (an error of the statement, not a lost connection) on three tries in a row: something in this one message is more than the database accepts.",
        retryable: false,
        message: "The event could not be stored",
        remedy: &[
            "Read the `dead_letters` record: its message holds the database's error; the `offboard.requests.dead` queue holds the message.",
            "If the error names a value (too long, out of range, an encoding), fix what the publisher sends, or report the event to offboard's maintainers: a value the parser passes should be storable.",
            "If the error names the schema (a missing column or table), the database is behind this release: run `cargo run -p migration -- up` or restart `offboard serve`, which migrates at start.",
            "Send the event again with `offboard submit --file EVENT.json` once fixed; its id keeps it from starting anything twice.",
        ],
    },
    // ---------------------------------------------------------------- Workflows
    CodeInfo {
        code: Code::Wf100,
        app: "workflows",
        condition: "A worker could not go on with a workflow because its stored state refuses the records the workflow's own definition leads to: the trail or the `workflows` row was changed outside offboard (by hand, a restore of part of the database, or tampering), or its definition was edited in place under the same content hash.",
        retryable: false,
        message: "The workflow's stored state no longer takes its own records",
        remedy: &[
            "Run `offboard replay <workflow-id>`: it names the first record that does not follow and the columns that differ from the rebuilt state.",
            "Find out who or what changed the database: compare the trail with the `trail_head` of the workflow's `workflow.completed`/`workflow.failed` events kept outside the database, and with backups.",
            "Check the person's account in the app by hand (`offboard plan --email …` shows what a run would do now) and finish the offboarding with a new event (a new `id`), since this workflow cannot be resumed.",
        ],
    },
];

/// The page at `docs/error-codes.md`: an introduction, a summary table, and one section
/// per code with its condition and numbered remedy.
pub fn render_reference_markdown() -> String {
    let mut out = String::new();
    out.push_str("# Error codes\n\n");
    out.push_str(
        "Every problem offboard reports carries a stable code. This page lists each code, \
         what raises it and how to clear it; `offboard explain CODE` prints the same text in \
         a terminal and `offboard explain --list` lists the codes.\n\n",
    );
    out.push_str(
        "- `-A` codes come from a connection check: `offboard check`, and the check \
         `offboard serve` runs for every connection when it starts.\n\
         - `-B` codes come from a workflow run, when something that worked before fails. \
         Once the cause is fixed, `offboard retry <workflow-id>` resumes the workflow at \
         the step that failed.\n\
         - `EVT-` codes reject an incoming event before any workflow exists; the message \
         goes to the `offboard.requests.dead` queue with the code in its `x-error-code` \
         header.\n\
         - A retryable code describes a temporary condition that may clear by itself; every \
         other code needs someone to change something first.\n\n",
    );
    out.push_str(
        "<!-- Generated from src/codes.rs. After changing the catalog, regenerate with \
         `OFFBOARD_UPDATE_DOCS=1 cargo test reference_page_is_current`. -->\n\n",
    );

    out.push_str("## Summary\n\n| Code | Message | Retryable |\n| --- | --- | --- |\n");
    for info in CATALOG {
        let code = info.code.as_str();
        out.push_str(&format!(
            "| [{code}](#{}) | {} | {} |\n",
            code.to_ascii_lowercase(),
            info.message.replace('|', "\\|"),
            yes_no(info.retryable),
        ));
    }

    let mut app = "";
    for info in CATALOG {
        if info.app != app {
            app = info.app;
            out.push_str(&format!("\n## {}\n", app_title(app)));
        }
        out.push_str(&format!("\n### {}\n\n{}\n\n", info.code, info.message));
        out.push_str(&format!("- **Raised when:** {}\n", info.condition));
        out.push_str(&format!("- **Retryable:** {}\n\n", yes_no(info.retryable)));
        out.push_str("What to do:\n\n");
        for (n, step) in info.remedy.iter().enumerate() {
            out.push_str(&format!("{}. {step}\n", n + 1));
        }
    }
    out
}

/// What `offboard explain CODE` prints: the code and message, when it is raised, whether
/// it is retryable, and the numbered remedy.
pub fn render_explain(code: Code) -> String {
    let info = code.info();
    let mut out = format!(
        "{code}: {}\n\nRaised when: {}\nRetryable:   {}\n\nWhat to do:\n",
        info.message,
        info.condition,
        yes_no(info.retryable),
    );
    for (n, step) in info.remedy.iter().enumerate() {
        out.push_str(&format!("  {}. {step}\n", n + 1));
    }
    out
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}

fn app_title(app: &str) -> &str {
    match app {
        "smartsheet" => "Smartsheet",
        "postman" => "Postman",
        "scim" => "SCIM apps",
        "events" => "Events",
        "workflows" => "Workflows",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_every_code_once_in_order() {
        assert_eq!(CATALOG.len(), Code::ALL.len());
        for (info, &code) in CATALOG.iter().zip(Code::ALL) {
            assert_eq!(info.code, code);
            assert!(
                std::ptr::eq(code.info(), info),
                "{code}: info() picks another entry"
            );
        }
        let mut seen = std::collections::HashSet::new();
        for &code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{code} is listed twice");
        }
    }

    #[test]
    fn text_form_round_trips() {
        for &code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
            assert_eq!(Code::parse(&code.as_str().to_lowercase()), Some(code));
            assert_eq!(code.as_str().parse::<Code>(), Ok(code));
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!(Code::parse(" smt-100-a "), Some(Code::Smt100A));
        for bad in ["", "SMT-100", "SMT-100-C", "EVT-199", "POST-100-A-B"] {
            assert_eq!(Code::parse(bad), None, "{bad:?}");
            assert!(bad.parse::<Code>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        for &code in Code::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), code);
        }
        assert!(serde_json::from_str::<Code>("\"SMT-999-A\"").is_err());
    }

    #[test]
    fn entries_are_well_formed() {
        for info in CATALOG {
            let code = info.code.as_str();
            let prefix = match info.app {
                "smartsheet" => "SMT-",
                "postman" => "POST-",
                "scim" => "SCIM-",
                "events" => "EVT-",
                "workflows" => "WF-",
                other => panic!("{code}: unknown app {other:?}"),
            };
            assert!(code.starts_with(prefix), "{code} filed under {}", info.app);
            for (what, text) in [("message", info.message), ("condition", info.condition)] {
                assert!(!text.trim().is_empty(), "{code}: empty {what}");
                assert!(!text.contains('\n'), "{code}: {what} spans lines");
            }
            assert!(
                !info.message.ends_with('.'),
                "{code}: message ends with a period"
            );
            assert!(
                (2..=6).contains(&info.remedy.len()),
                "{code}: {} remedy steps",
                info.remedy.len()
            );
            for step in info.remedy {
                assert!(
                    !step.trim().is_empty() && !step.contains('\n'),
                    "{code}: bad step"
                );
            }
            assert_eq!(info.code.retryable(), info.retryable);
            assert_eq!(info.code.message(), info.message);
        }
    }

    #[test]
    fn only_the_unavailable_codes_are_retryable() {
        let retryable: Vec<Code> = Code::ALL
            .iter()
            .copied()
            .filter(|c| c.retryable())
            .collect();
        assert_eq!(retryable, [Code::Smt190B, Code::Post190B, Code::Scim190B]);
    }

    #[test]
    fn explain_shows_every_part() {
        let text = render_explain(Code::Smt110B);
        let info = Code::Smt110B.info();
        assert!(text.starts_with("SMT-110-B: "));
        assert!(text.contains(info.message));
        assert!(text.contains(info.condition));
        assert!(text.contains("Retryable:   no"));
        assert!(text.contains(&format!(
            "  {}. {}",
            info.remedy.len(),
            info.remedy[info.remedy.len() - 1]
        )));
        assert!(render_explain(Code::Post190B).contains("Retryable:   yes"));
    }

    #[test]
    fn reference_page_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/error-codes.md");
        let page = render_reference_markdown();
        if std::env::var("OFFBOARD_UPDATE_DOCS").as_deref() == Ok("1") {
            std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/docs")).unwrap();
            std::fs::write(path, &page).unwrap();
            return;
        }
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == page,
            "{path} is out of date; regenerate it with \
             `OFFBOARD_UPDATE_DOCS=1 cargo test reference_page_is_current`"
        );
    }
}
