//! Who may never be removed or downgraded through a connection: the owner of the
//! connection's own token, the app's administrators (System Admins in Smartsheet, team
//! Admins in Postman) unless the connection sets `allow_admins = true`, and anyone whose
//! email matches one of its `protected` patterns. Pure: the connectors gather the facts
//! (from the app, before their first write) and ask [`Guard::refusal`].

use wildmatch::WildMatchPattern;

/// A connection's protection rules (`protected`, `allow_admins`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// Email patterns: an exact address, or `*` standing for any run of characters
    /// (`*@ops.example.com`). Compared without regard to case.
    pub patterns: Vec<String>,
    /// Whether administrators may be removed or downgraded.
    pub allow_admins: bool,
}

/// What the connector found out about the person, before any write.
#[derive(Clone, Copy, Debug)]
pub struct Person<'a> {
    /// Every email the person is known by (the event's and the app's spelling).
    pub emails: &'a [&'a str],
    /// Whether the app says the person is an administrator.
    pub admin: bool,
    /// Whether the person owns the token this connection uses.
    pub token_owner: bool,
}

impl Guard {
    /// Why the person may not be removed or downgraded, or `None` when they may.
    pub fn refusal(&self, person: Person<'_>) -> Option<String> {
        if person.token_owner {
            return Some(
                "the person owns the token this connection uses; offboard never removes its own access".into(),
            );
        }
        if let Some(p) = self
            .patterns
            .iter()
            .find(|p| person.emails.iter().any(|e| matches(p, e)))
        {
            return Some(format!("the person matches the protected pattern {p:?}"));
        }
        if person.admin && !self.allow_admins {
            return Some(
                "the person is an administrator; set allow_admins = true on the connection to allow it".into(),
            );
        }
        None
    }
}

/// A `protected` pattern as wildmatch reads it: `*` is any run of characters, and there
/// is no single-character wildcard (`?` is a legal email character and matches itself),
/// so NUL, which no email holds, stands in wildmatch's place for one.
type Pattern = WildMatchPattern<'*', '\0'>;

/// Whether `email` matches `pattern` (`*` = any run of characters), ignoring case.
pub fn matches(pattern: &str, email: &str) -> bool {
    Pattern::new_case_insensitive(pattern).matches(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        for (pattern, email, expected) in [
            ("ceo@example.com", "ceo@example.com", true),
            ("ceo@example.com", "CEO@Example.com", true),
            ("ceo@example.com", "ceo@example.com.evil", false),
            ("*@ops.example.com", "sam@ops.example.com", true),
            ("*@ops.example.com", "sam@dev.ops.example.com", false),
            ("*@ops.example.com", "sam@example.com", false),
            ("admin-*@*", "admin-1@example.com", true),
            ("a*a", "a", false),
            ("*", "anyone@example.com", true),
            ("ÉLISE@example.com", "élise@example.com", true),
            ("what?@example.com", "whats@example.com", false),
            ("what?@example.com", "what?@example.com", true),
        ] {
            assert_eq!(matches(pattern, email), expected, "{pattern} ~ {email}");
        }
    }

    #[test]
    fn token_owners_admins_and_patterns_are_refused() {
        let guard = Guard {
            patterns: vec!["*@ops.example.com".into()],
            allow_admins: false,
        };
        let person = |email, admin, token_owner| Person {
            emails: std::slice::from_ref(email),
            admin,
            token_owner,
        };
        let plain = "ada@example.com";
        let ops = "sam@ops.example.com";
        assert_eq!(guard.refusal(person(&plain, false, false)), None);
        assert!(guard.refusal(person(&plain, false, true)).is_some());
        assert!(guard.refusal(person(&plain, true, false)).is_some());
        assert!(guard.refusal(person(&ops, false, false)).is_some());
        let lenient = Guard {
            allow_admins: true,
            ..guard
        };
        assert_eq!(lenient.refusal(person(&plain, true, false)), None);
        assert!(lenient.refusal(person(&plain, true, true)).is_some());
    }
}
