//! Policies at runtime: `GET /api/policies`, `POST /api/policies`, `DELETE /api/policies/{id}`.
//!
//! A change applies at once: the node's compiled rule set is rebuilt and swapped as a whole
//! ([`Node::update_policies`]), so the next connection sees it. Rules added here are written to
//! the node's database first and restored at the next start ([`restore`]); rules from the
//! config file (`config-N`) are listed but cannot be deleted here: the file is their home.

use super::{error, Api};
use crate::{
    policy::{Policies, PolicyEntry, PolicyOrigin, PolicySpec},
    state::Node,
};
use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use std::sync::{atomic::Ordering::Relaxed, Arc};

/// Why an edit failed, with the status the API answers.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such policy")]
    NotFound,
    #[error("policy {0} comes from the config file: edit the file and restart the node")]
    FromConfig(String),
    #[error("cannot save the policy: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl EditError {
    fn status(&self) -> StatusCode {
        match self {
            EditError::Invalid(_) => StatusCode::BAD_REQUEST,
            EditError::NotFound => StatusCode::NOT_FOUND,
            EditError::FromConfig(_) => StatusCode::CONFLICT,
            EditError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Puts the policies added through the API in earlier runs back in force, after the config
/// file's. A stored rule that no longer parses or validates is skipped with a warning.
pub fn restore(node: &Node) {
    let Some(store) = &node.store else { return };
    let stored = match store.policies() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stored policies; using the config's only");
            return;
        }
    };
    let mut entries = node.policies().entries();
    for (id, spec) in stored {
        let entry = spec.and_then(|spec| {
            spec.validate()?;
            Ok(api_entry(id, spec))
        });
        match entry {
            Ok(e) => entries.push(e),
            Err(e) => tracing::warn!(policy = id, error = %e, "skipping a stored policy"),
        }
    }
    match Policies::from_entries(entries) {
        Ok(p) => node.set_policies(p),
        Err(e) => tracing::warn!(error = %e, "cannot restore the stored policies"),
    }
}

fn api_entry(id: i64, spec: PolicySpec) -> PolicyEntry {
    PolicyEntry {
        id: id.to_string(),
        origin: PolicyOrigin::Api,
        spec,
    }
}

/// Adds a rule: validated, stored (when the node has a database), then in force.
pub fn add(api: &Api, spec: PolicySpec) -> Result<PolicyEntry, EditError> {
    let node = &api.node;
    spec.validate().map_err(EditError::Invalid)?;
    let mut added = None;
    node.update_policies(|current| {
        let id = match &node.store {
            Some(store) => store.add_policy(&spec)?,
            None => api.next_memory_id.fetch_add(1, Relaxed),
        };
        let entry = api_entry(id, spec);
        let mut entries = current.entries();
        entries.push(entry.clone());
        let new = Policies::from_entries(entries).map_err(EditError::Invalid)?;
        added = Some(entry);
        Ok::<_, EditError>(new)
    })?;
    added.ok_or(EditError::NotFound)
}

/// Deletes a rule added through the API.
pub fn remove(node: &Node, id: &str) -> Result<(), EditError> {
    node.update_policies(|current| {
        let entries = current.entries();
        let entry = entries.iter().find(|e| e.id == id).ok_or(EditError::NotFound)?;
        if entry.origin == PolicyOrigin::Config {
            return Err(EditError::FromConfig(id.to_string()));
        }
        if let (Some(store), Ok(row)) = (&node.store, id.parse::<i64>()) {
            store.delete_policy(row)?;
        }
        let rest = entries.into_iter().filter(|e| e.id != id).collect();
        Policies::from_entries(rest).map_err(EditError::Invalid)
    })
}

pub async fn list(State(node): State<Arc<Node>>) -> Json<Vec<PolicyEntry>> {
    Json(node.policies().entries())
}

pub async fn create(State(api): State<Api>, body: Result<Json<PolicySpec>, JsonRejection>) -> Response {
    let spec = match body {
        Ok(Json(spec)) => spec,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected a JSON policy {{\"kind\", \"uplink\", \"hosts\", \"ttl\"}} with Content-Type: application/json: {}",
                    e.body_text()
                ),
            )
        }
    };
    let api2 = api.clone();
    let added = tokio::task::spawn_blocking(move || add(&api2, spec)).await;
    match added {
        Ok(Ok(entry)) => {
            tracing::info!(policy = %entry.id, kind = ?entry.spec.kind, "policy added through the API");
            api.changed.notify_waiters();
            let location = format!("/api/policies/{}", entry.id);
            (StatusCode::CREATED, [(header::LOCATION, location)], Json(entry)).into_response()
        }
        Ok(Err(e)) => error(e.status(), &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the policy edit failed"),
    }
}

pub async fn delete(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let node = api.node.clone();
    let id2 = id.clone();
    match tokio::task::spawn_blocking(move || remove(&node, &id2)).await {
        Ok(Ok(())) => {
            tracing::info!(policy = %id, "policy deleted through the API");
            api.changed.notify_waiters();
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) => error(e.status(), &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the policy edit failed"),
    }
}
