//! SQL functions for telemetry: `decrypt(payload, event_id, key_id)`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use vigil_operators::crypto::{KEY_ENV, PayloadKey};

/// Registers vigil's functions on `ctx`; `decrypt` opens payloads only with `key`.
pub fn register(ctx: &SessionContext, key: Option<PayloadKey>) {
    ctx.register_udf(ScalarUDF::from(Decrypt::new(key)));
    ctx.register_udwf(crate::windows::zscore());
}

/// `decrypt(payload, event_id, key_id)`: the clear text of a payload sealed by the pipelines
/// (AES-256-GCM, bound to its event id). Without a key it says how to give one; a payload of
/// another key or one altered is an error naming the event, never a silent NULL. A NULL
/// payload gives NULL.
#[derive(Debug)]
struct Decrypt {
    key: Option<PayloadKey>,
    signature: Signature,
}

impl Decrypt {
    fn new(key: Option<PayloadKey>) -> Self {
        Self {
            key,
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl PartialEq for Decrypt {
    fn eq(&self, other: &Self) -> bool {
        self.key.as_ref().map(PayloadKey::key_id) == other.key.as_ref().map(PayloadKey::key_id)
    }
}

impl Eq for Decrypt {}

impl std::hash::Hash for Decrypt {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.as_ref().map(PayloadKey::key_id).hash(state);
    }
}

impl ScalarUDFImpl for Decrypt {
    fn name(&self) -> &str {
        "decrypt"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() != 3 {
            return plan_err!("decrypt takes (payload, event_id, key_id)");
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(key) = &self.key else {
            return exec_err!(
                "decrypt needs the payload key: pass --key-file FILE (64 hex characters) or set {KEY_ENV}"
            );
        };
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let as_type = |array: &ArrayRef, to: &DataType| arrow::compute::cast(array, to);
        let payloads = as_type(&arrays[0], &DataType::Binary)?;
        let event_ids = as_type(&arrays[1], &DataType::Utf8)?;
        let key_ids = as_type(&arrays[2], &DataType::Utf8)?;
        let (payloads, event_ids, key_ids) = (
            payloads.as_binary::<i32>(),
            event_ids.as_string::<i32>(),
            key_ids.as_string::<i32>(),
        );
        let mut out = StringBuilder::with_capacity(payloads.len(), payloads.len() * 32);
        for i in 0..payloads.len() {
            if payloads.is_null(i) {
                out.append_null();
                continue;
            }
            let event = if event_ids.is_null(i) {
                ""
            } else {
                event_ids.value(i)
            };
            let key_id = if key_ids.is_null(i) {
                ""
            } else {
                key_ids.value(i)
            };
            let clear = match key.open(event, key_id, payloads.value(i)) {
                Ok(clear) => clear,
                Err(error) => {
                    return exec_err!("decrypting the payload of event {event:?}: {error}");
                }
            };
            match std::str::from_utf8(&clear) {
                Ok(text) => out.append_value(text),
                Err(_) => return exec_err!("the payload of event {event:?} is not text"),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
