//! The directory `offboard demo` runs against: the same Northwind people as the other
//! simulators' demos, in SCIM groups, with one bearer token.

use super::{ScimGroup, ScimSim, ScimUser};

/// Who is who in the directory [`ScimSim::seed_demo`] creates.
#[derive(Clone, Debug)]
pub struct ScimDemoSeed {
    /// The bearer token the provider accepts.
    pub token: String,
    /// `userName` (an email) of the person leaving.
    pub leaver_email: String,
    /// The leaver's SCIM id.
    pub leaver_id: String,
    /// The groups the leaver belongs to.
    pub leaver_groups: Vec<String>,
    /// `userName` of a member whose licence is to be reclaimed.
    pub reclaim_email: String,
    /// That member's SCIM id.
    pub reclaim_id: String,
    /// Ids of every group.
    pub groups: Vec<String>,
}

const DOMAIN: &str = "northwind.example";

fn person(given: &str, family: &str, employee_id: &str) -> ScimUser {
    let email = format!(
        "{}.{}@{DOMAIN}",
        given.to_ascii_lowercase(),
        family.to_ascii_lowercase()
    );
    ScimUser::new(&email)
        .with_name(given, family)
        .with_external_id(employee_id)
}

impl ScimSim {
    /// Fills the directory with eight people in three groups (the leaver in two of
    /// them) and accepts the token `demo-scim-token`.
    pub fn seed_demo(&self) -> ScimDemoSeed {
        let token = "demo-scim-token".to_string();
        self.add_token(&token);
        let admin = self.add_user(person("Dana", "Whitfield", "E1001"));
        let leaver = person("Marcus", "Lee", "E1002");
        let leaver_email = leaver.user_name.clone();
        let leaver_id = self.add_user(leaver);
        let recipient = self.add_user(person("Priya", "Raman", "E1003"));
        let reclaim = person("Gordon", "Pike", "E1004");
        let reclaim_email = reclaim.user_name.clone();
        let reclaim_id = self.add_user(reclaim);
        let aisha = self.add_user(person("Aisha", "Khan", "E1005"));
        let ben = self.add_user(person("Ben", "Carter", "E1006"));
        self.add_user(person("Chloe", "Martin", "E1007"));
        self.add_user(person("Felix", "Wagner", "E1008").inactive());

        let engineering = self.add_group(ScimGroup::new(
            "Engineering",
            &[&leaver_id, &recipient, &aisha],
        ));
        let on_call = self.add_group(ScimGroup::new("On-call", &[&leaver_id, &ben]));
        let admins = self.add_group(ScimGroup::new("Admins", &[&admin, &reclaim_id]));
        ScimDemoSeed {
            token,
            leaver_email,
            leaver_id,
            leaver_groups: vec![engineering.clone(), on_call.clone()],
            reclaim_email,
            reclaim_id,
            groups: vec![engineering, on_call, admins],
        }
    }
}
