//! The `metrics` DynamoDB table: one item per admin-defined metric, keyed by `id`, its fields as
//! [`MetricDefinition`]'s serde attributes name them. Retired metrics stay as tombstones.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::metric_def::MetricDefinition;
use crate::ports::{MetricDefinitions, StoreError};

/// The `metrics` table.
#[derive(Debug, Clone)]
pub struct MetricTable {
    client: Client,
    table: String,
}

impl MetricTable {
    /// The table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn from_item(
    item: std::collections::HashMap<String, AttributeValue>,
) -> Result<MetricDefinition, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
        .map_err(|e| StoreError::Permanent(format!("not a metric definition: {e}")))
}

#[async_trait::async_trait]
impl MetricDefinitions for MetricTable {
    async fn list_metrics(&self) -> Result<Vec<MetricDefinition>, StoreError> {
        super::scan_consistent(&self.client, &self.table)
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    async fn get_metric(&self, id: &str) -> Result<Option<MetricDefinition>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| super::store_error(&e))?;
        out.item.map(from_item).transpose()
    }

    async fn create_metric(&self, def: &MetricDefinition) -> Result<bool, StoreError> {
        let item = serde_dynamo::aws_sdk_dynamodb_1::to_item(def)
            .map_err(|e| StoreError::Permanent(format!("not an item: {e}")))?;
        super::conditional(
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(id)")
                .send()
                .await,
        )
    }

    async fn describe_metric(
        &self,
        id: &str,
        description: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_string()))
            .condition_expression("attribute_exists(id) AND attribute_not_exists(retiredAt)")
            .expression_attribute_names("#d", "description");
        request = match description {
            Some(d) => request
                .update_expression("SET #d = :d")
                .expression_attribute_values(":d", AttributeValue::S(d.to_string())),
            None => request.update_expression("REMOVE #d"),
        };
        super::conditional(request.send().await)
    }

    async fn retire_metric(&self, id: &str, at: &str) -> Result<bool, StoreError> {
        super::conditional(
            self.client
                .update_item()
                .table_name(&self.table)
                .key("id", AttributeValue::S(id.to_string()))
                .condition_expression("attribute_exists(id) AND attribute_not_exists(retiredAt)")
                .update_expression("SET retiredAt = :at")
                .expression_attribute_values(":at", AttributeValue::S(at.to_string()))
                .send()
                .await,
        )
    }
}
