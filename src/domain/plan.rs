//! Which workflows an accepted event asks for: one per connection it names (every
//! configured one when it names none), each with the definition for the connection's app
//! and the event type, and its first record. Pure: the caller says which connections
//! exist and which definitions are in force.

use super::definition::Definition;
use super::event::{Rejection, Request};
use super::machine::{self, Record, State, WorkflowRequest};
use crate::codes::Code;

/// One workflow to create.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The definition it will run with, to the end.
    pub definition: Definition,
    /// Its first record.
    pub created: Record,
    /// The state after that record.
    pub state: State,
}

/// Plans the workflows of `request`. `connections` lists every configured connection with
/// its app; `definition` finds the definition for an app and event type.
pub fn plan<'a>(
    request: &Request,
    connections: &[(&str, &str)],
    definition: impl Fn(&str, super::event::EventType) -> Option<&'a Definition>,
) -> Result<Vec<Planned>, Rejection> {
    let names: Vec<&str> = match &request.connections {
        Some(names) => names.iter().map(String::as_str).collect(),
        None => connections.iter().map(|(n, _)| *n).collect(),
    };
    let mut planned = Vec::with_capacity(names.len());
    for name in names {
        let Some((_, app)) = connections.iter().find(|(n, _)| *n == name) else {
            return Err(Rejection {
                code: Code::Evt103,
                message: format!("connection {name:?} is not configured"),
            });
        };
        let Some(def) = definition(app, request.event_type) else {
            return Err(Rejection {
                code: Code::Evt101,
                message: format!(
                    "no workflow handles {} for {app}",
                    request.event_type.as_str()
                ),
            });
        };
        let created = Record::Created {
            request: WorkflowRequest {
                event_id: request.event_id.clone(),
                source: request.source.clone(),
                event_time: request.time,
                event_type: request.event_type,
                connection: name.to_string(),
                app: app.to_string(),
                person_email: request.person_email.clone(),
                transfer_to: request.transfer_to.clone(),
                not_before: request.not_before,
                employee_id: request.employee_id.clone(),
            },
            definition: def.reference(),
            steps: def.steps.iter().map(|s| s.name.clone()).collect(),
        };
        let state = machine::create(&created).map_err(|v| Rejection {
            code: Code::Evt102,
            message: v.0,
        })?;
        planned.push(Planned {
            definition: def.clone(),
            created,
            state,
        });
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventType;

    fn request(connections: Option<Vec<String>>) -> Request {
        Request {
            event_id: "e1".into(),
            source: "hr".into(),
            event_type: EventType::Offboarding,
            time: None,
            person_email: "ada@example.com".into(),
            employee_id: None,
            transfer_to: None,
            connections,
            not_before: None,
            reason: None,
        }
    }

    fn check(connections: Option<Vec<String>>, expect: Result<Vec<&str>, Code>) {
        let def = Definition::parse(crate::domain::definition::SAMPLE, |_| true).unwrap();
        let configured = [("sheets", "smartsheet"), ("pm", "postman")];
        let got = plan(&request(connections), &configured, |app, _| {
            (app == "smartsheet").then_some(&def)
        });
        match (got, expect) {
            (Ok(p), Ok(names)) => {
                let got: Vec<String> = p
                    .iter()
                    .map(|w| w.state.request.connection.clone())
                    .collect();
                assert_eq!(got, names);
            }
            (Err(r), Err(code)) => assert_eq!(r.code, code),
            (got, expect) => panic!("got {:?}, expected {expect:?}", got.map(|p| p.len())),
        }
    }

    #[test]
    fn one_workflow_per_named_connection_and_coded_refusals() {
        check(Some(vec!["sheets".into()]), Ok(vec!["sheets"]));
        check(Some(vec!["nowhere".into()]), Err(Code::Evt103));
        // Every configured connection; the Postman one has no definition here.
        check(None, Err(Code::Evt101));
    }
}
