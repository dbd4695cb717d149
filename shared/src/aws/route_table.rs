//! The `routes` DynamoDB table: one item per route, keyed by `id`.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};

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

/// A `routes` item: the route's fields as [`Route`]'s serde attributes define them (the same
/// names as in the API), plus when it was last written.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    #[serde(flatten)]
    route: Route,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

fn to_item(r: &Route) -> HashMap<String, AttributeValue> {
    let item = Item {
        route: r.clone(),
        updated_at: Some(crate::time::format(chrono::Utc::now())),
    };
    // Strings and a bool: serde_dynamo cannot fail on them.
    serde_dynamo::aws_sdk_dynamodb_1::to_item(item).expect("a route is a DynamoDB item")
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Route> {
    serde_dynamo::aws_sdk_dynamodb_1::from_item::<Item>(item.clone())
        .ok()
        .map(|i| i.route)
}

#[async_trait::async_trait]
impl RouteSource for RouteTableStore {
    async fn list_routes(&self) -> Result<Vec<Route>, StoreError> {
        let mut routes = Vec::new();
        for item in super::scan_consistent(&self.client, &self.table).await? {
            match from_item(&item) {
                Some(route) => routes.push(route),
                None => tracing::warn!("routes table holds an item that is not a route"),
            }
        }
        routes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(routes)
    }
}

#[async_trait::async_trait]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_item_round_trips_with_the_apis_field_names() {
        for description in [None, Some("game events".to_string())] {
            let route = Route {
                id: "r1".into(),
                pattern: "game.*".into(),
                queue_url: "https://sqs.eu-west-1.amazonaws.com/1/telemetry_q".into(),
                enabled: false,
                description,
            };
            let item = to_item(&route);
            assert_eq!(from_item(&item), Some(route.clone()));
            let api: Vec<String> = serde_json::to_value(&route)
                .unwrap()
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let mut stored: Vec<String> =
                item.keys().filter(|k| *k != "updatedAt").cloned().collect();
            stored.sort();
            let mut api = api;
            api.sort();
            assert_eq!(stored, api);
        }
    }
}
