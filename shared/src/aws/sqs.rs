//! [`QueueSink`] on SQS `SendMessageBatch`.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};

use crate::delivery::{EVENT_TYPE_ATTRIBUTE, MAX_SQS_BYTES, QueueMessage};
use crate::ports::{QueueSink, SendError};

/// SQS queues, with each queue's `MaximumMessageSize` cached for the life of the function.
#[derive(Debug)]
pub struct SqsQueues {
    client: Client,
    sizes: Mutex<HashMap<String, usize>>,
}

impl SqsQueues {
    /// Queues reached through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            sizes: Mutex::new(HashMap::new()),
        }
    }
}

fn classify<
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
>(
    e: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> SendError {
    let reason = super::describe(e);
    if super::is_retryable(e) {
        SendError::Transient(reason)
    } else {
        SendError::Permanent(reason)
    }
}

fn entry(index: usize, m: &QueueMessage) -> SendMessageBatchRequestEntry {
    let attribute = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(&m.event_type)
        .build()
        .expect("data type is set");
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(&m.body)
        .message_attributes(EVENT_TYPE_ATTRIBUTE, attribute)
        .set_message_group_id(m.group_id.clone())
        .set_message_deduplication_id(m.dedup_id.clone())
        .build()
        .expect("id and body are set")
}

/// Per-entry outcomes of a batch call, in input order. An entry neither successful nor failed
/// counts as a retryable failure: never assume delivery.
pub fn entry_outcomes(count: usize, output: &SendMessageBatchOutput) -> Vec<Result<(), SendError>> {
    let mut outcomes: Vec<Result<(), SendError>> = (0..count)
        .map(|_| Err(SendError::Transient("no result for entry".into())))
        .collect();
    for ok in output.successful() {
        if let Some(slot) = ok
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| outcomes.get_mut(i))
        {
            *slot = Ok(());
        }
    }
    for failed in output.failed() {
        if let Some(slot) = failed
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| outcomes.get_mut(i))
        {
            let reason = format!("{}: {}", failed.code(), failed.message().unwrap_or(""));
            // SQS marks the caller's faults (bad content, too large): resending cannot help.
            *slot = Err(
                if failed.sender_fault() && !super::is_retryable_code(failed.code()) {
                    SendError::Permanent(reason)
                } else {
                    SendError::Transient(reason)
                },
            );
        }
    }
    outcomes
}

#[async_trait::async_trait]
impl QueueSink for SqsQueues {
    async fn max_message_size(&self, queue_url: &str) -> Result<usize, SendError> {
        if let Some(size) = self.sizes.lock().expect("lock").get(queue_url) {
            return Ok(*size);
        }
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let size = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::MaximumMessageSize))
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(MAX_SQS_BYTES)
            .min(MAX_SQS_BYTES);
        self.sizes
            .lock()
            .expect("lock")
            .insert(queue_url.to_string(), size);
        Ok(size)
    }

    async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[&QueueMessage],
    ) -> Vec<Result<(), SendError>> {
        let entries: Vec<_> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| entry(i, m))
            .collect();
        match self
            .client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            // forward retries the failed entries itself (`SEND_RETRIES`).
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().retry_config(super::attempt_once()),
            )
            .send()
            .await
        {
            Ok(output) => entry_outcomes(messages.len(), &output),
            Err(e) => {
                let error = classify(&e);
                messages.iter().map(|_| Err(error.clone())).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};

    use super::*;

    #[test]
    fn entry_failures_are_read_one_by_one() {
        let ok = |id: &str| {
            SendMessageBatchResultEntry::builder()
                .id(id)
                .message_id("m")
                .md5_of_message_body("x")
                .build()
                .unwrap()
        };
        let failed = |id: &str, code: &str, sender: bool| {
            BatchResultErrorEntry::builder()
                .id(id)
                .code(code)
                .sender_fault(sender)
                .build()
                .unwrap()
        };
        let output = SendMessageBatchOutput::builder()
            .successful(ok("0"))
            .failed(failed("1", "InternalError", false))
            .failed(failed("2", "InvalidMessageContents", true))
            .successful(ok("4"))
            .build()
            .unwrap();
        let outcomes = entry_outcomes(5, &output);
        assert!(outcomes[0].is_ok() && outcomes[4].is_ok());
        assert!(matches!(outcomes[1], Err(SendError::Transient(_))));
        assert!(matches!(outcomes[2], Err(SendError::Permanent(_))));
        // Entry 3 is in neither list: not delivered as far as we know.
        assert!(matches!(outcomes[3], Err(SendError::Transient(_))));
    }
}
