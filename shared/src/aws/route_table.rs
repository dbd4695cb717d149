//! The `routes` DynamoDB table: one item per route, keyed by `id`.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::ports::{RouteSource, RouteStore, StoreError};
use crate::route::Route;

/// The `routes` table.
#[derive(Debug, Clone)]
pub struct RouteTableStore {
    client: Client,
    table: String,
}

impl RouteTableStore {
    /// The table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn to_item(r: &Route) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("id".to_string(), AttributeValue::S(r.id.clone())),
        ("match".to_string(), AttributeValue::S(r.pattern.clone())),
        (
            "queueUrl".to_string(),
            AttributeValue::S(r.queue_url.clone()),
        ),
        ("enabled".to_string(), AttributeValue::Bool(r.enabled)),
        (
            "updatedAt".to_string(),
            AttributeValue::S(crate::time::format(chrono::Utc::now())),
        ),
    ]);
    if let Some(d) = &r.description {
        item.insert("description".into(), AttributeValue::S(d.clone()));
    }
    item
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Route> {
    let s = |k: &str| match item.get(k) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    Some(Route {
        id: s("id")?,
        pattern: s("match")?,
        queue_url: s("queueUrl")?,
        enabled: matches!(item.get("enabled"), Some(AttributeValue::Bool(true))),
        description: s("description"),
    })
}

impl RouteSource for RouteTableStore {
    async fn list_routes(&self) -> Result<Vec<Route>, StoreError> {
        let mut routes = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| super::store_error(&e))?;
            for item in out.items() {
                match from_item(item) {
                    Some(route) => routes.push(route),
                    None => tracing::warn!("routes table holds an item that is not a route"),
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                routes.sort_by(|a, b| a.id.cmp(&b.id));
                return Ok(routes);
            }
        }
    }
}

impl RouteStore for RouteTableStore {
    async fn put_route(&self, route: &Route) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(route)))
            .send()
            .await
            .map_err(|e| super::store_error(&e))?;
        Ok(())
    }

    async fn delete_route(&self, id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_string()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| super::store_error(&e))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }
}
