//! CloudWatch on loopback, in the protocol the SDK speaks to it: Smithy RPC v2 CBOR
//! (`POST /service/GraniteServiceVersion20100801/operation/<Operation>`, bodies in CBOR,
//! `smithy-protocol: rpc-v2-cbor`), which moto (5.2) does not serve. **A stand-in, named as
//! such**: the request and response shapes are those of CloudWatch's service model
//! (ListMetrics: `Namespace`, `MetricName`, `Dimensions` as filters, `NextToken`, 500
//! metrics a page; GetMetricData: `MetricDataQueries` with `MetricStat`, `StartTime`,
//! `EndTime`, results per query id with `Timestamps` (CBOR tag 1) and `Values`, the period's
//! statistic over the datapoints in it, `StatusCode: Complete`), answered from datapoints the
//! test puts the way the CloudWatch agent sends them.

use crate::mock_http::{MockServer, Req, Resp};
use ciborium::Value;
use std::sync::{Arc, Mutex};

/// One datapoint as an agent sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// Namespace (`CWAgent`).
    pub namespace: String,
    /// Metric (`disk_used_percent`).
    pub name: String,
    /// Its dimensions.
    pub dimensions: Vec<(String, String)>,
    /// When, unix seconds.
    pub at_s: i64,
    /// Value.
    pub value: f64,
}

/// The stand-in.
#[derive(Debug)]
pub struct CloudWatchFake {
    server: MockServer,
    data: Arc<Mutex<Vec<Datum>>>,
    /// Operations answered, in order.
    pub calls: Arc<Mutex<Vec<String>>>,
}

const PREFIX: &str = "/service/GraniteServiceVersion20100801/operation/";

fn get<'a>(m: &'a Value, key: &str) -> Option<&'a Value> {
    m.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn text(m: &Value, key: &str) -> Option<String> {
    get(m, key)?.as_text().map(str::to_string)
}

fn seconds(v: &Value) -> Option<f64> {
    let v = match v {
        Value::Tag(1, inner) => inner.as_ref(),
        v => v,
    };
    match v {
        Value::Integer(i) => Some(i128::from(*i) as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn dims(v: Option<&Value>) -> Vec<(String, Option<String>)> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| Some((text(d, "Name")?, text(d, "Value"))))
                .collect()
        })
        .unwrap_or_default()
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    )
}

fn cbor(status: u16, v: &Value) -> Resp {
    let mut body = Vec::new();
    ciborium::into_writer(v, &mut body).expect("CBOR");
    Resp {
        status,
        headers: vec![
            ("content-type".into(), "application/cbor".into()),
            ("smithy-protocol".into(), "rpc-v2-cbor".into()),
        ],
        body,
    }
}

fn error(code: &str, message: &str) -> Resp {
    cbor(
        400,
        &map(vec![
            ("__type", Value::Text(code.into())),
            ("message", Value::Text(message.into())),
        ]),
    )
}

/// A metric: namespace, name, sorted dimensions.
type Key = (String, String, Vec<(String, String)>);

fn key_of(d: &Datum) -> Key {
    let mut dims = d.dimensions.clone();
    dims.sort();
    (d.namespace.clone(), d.name.clone(), dims)
}

fn metric_value(k: &Key) -> Value {
    map(vec![
        ("Namespace", Value::Text(k.0.clone())),
        ("MetricName", Value::Text(k.1.clone())),
        (
            "Dimensions",
            Value::Array(
                k.2.iter()
                    .map(|(n, v)| {
                        map(vec![
                            ("Name", Value::Text(n.clone())),
                            ("Value", Value::Text(v.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

fn answer(data: &[Datum], op: &str, body: &Value) -> Resp {
    match op {
        "ListMetrics" => {
            let ns = text(body, "Namespace");
            let name = text(body, "MetricName");
            let filters = dims(get(body, "Dimensions"));
            let mut keys: Vec<Key> = data
                .iter()
                .filter(|d| ns.as_ref().is_none_or(|n| *n == d.namespace))
                .filter(|d| name.as_ref().is_none_or(|n| *n == d.name))
                .filter(|d| {
                    filters.iter().all(|(fname, fvalue)| {
                        d.dimensions
                            .iter()
                            .any(|(n, v)| n == fname && fvalue.as_ref().is_none_or(|fv| fv == v))
                    })
                })
                .map(key_of)
                .collect();
            keys.sort();
            keys.dedup();
            let start: usize = text(body, "NextToken")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let page: Vec<Value> = keys
                .iter()
                .skip(start)
                .take(500)
                .map(metric_value)
                .collect();
            let mut out = vec![("Metrics", Value::Array(page))];
            if keys.len() > start + 500 {
                out.push(("NextToken", Value::Text((start + 500).to_string())));
            }
            cbor(200, &map(out))
        }
        "GetMetricData" => {
            let (Some(start), Some(end)) = (
                get(body, "StartTime").and_then(seconds),
                get(body, "EndTime").and_then(seconds),
            ) else {
                return error(
                    "InvalidParameterValue",
                    "StartTime and EndTime are required",
                );
            };
            let queries = get(body, "MetricDataQueries")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if queries.len() > 500 {
                return error("InvalidParameterValue", "at most 500 MetricDataQueries");
            }
            let mut results = Vec::new();
            for q in &queries {
                let id = text(q, "Id").unwrap_or_default();
                let Some(stat) = get(q, "MetricStat") else {
                    return error(
                        "InvalidParameterCombination",
                        "only MetricStat queries here",
                    );
                };
                let Some(metric) = get(stat, "Metric") else {
                    return error("InvalidParameterValue", "MetricStat.Metric is required");
                };
                let mut want: Vec<(String, String)> = dims(get(metric, "Dimensions"))
                    .into_iter()
                    .map(|(n, v)| (n, v.unwrap_or_default()))
                    .collect();
                want.sort();
                let k: Key = (
                    text(metric, "Namespace").unwrap_or_default(),
                    text(metric, "MetricName").unwrap_or_default(),
                    want,
                );
                let period = match get(stat, "Period") {
                    Some(Value::Integer(i)) => i128::from(*i) as i64,
                    _ => return error("InvalidParameterValue", "MetricStat.Period is required"),
                };
                let statistic = text(stat, "Stat").unwrap_or_default();
                // Buckets aligned to the period, as CloudWatch aligns hourly data.
                let mut buckets: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
                for d in data.iter().filter(|d| key_of(d) == k) {
                    let t = d.at_s as f64;
                    if t >= start && t < end {
                        buckets
                            .entry(d.at_s - d.at_s.rem_euclid(period))
                            .or_default()
                            .push(d.value);
                    }
                }
                let mut ts = Vec::new();
                let mut vals = Vec::new();
                for (b, vs) in buckets {
                    let v = match statistic.as_str() {
                        "Maximum" => vs.iter().copied().fold(f64::MIN, f64::max),
                        "Minimum" => vs.iter().copied().fold(f64::MAX, f64::min),
                        "Sum" => vs.iter().sum(),
                        "SampleCount" => vs.len() as f64,
                        "Average" => vs.iter().sum::<f64>() / vs.len() as f64,
                        s => return error("InvalidParameterValue", &format!("statistic {s}")),
                    };
                    ts.push(Value::Tag(1, Box::new(Value::Integer(b.into()))));
                    vals.push(Value::Float(v));
                }
                results.push(map(vec![
                    ("Id", Value::Text(id)),
                    ("Label", Value::Text(k.1.clone())),
                    ("Timestamps", Value::Array(ts)),
                    ("Values", Value::Array(vals)),
                    ("StatusCode", Value::Text("Complete".into())),
                ]));
            }
            cbor(
                200,
                &map(vec![
                    ("MetricDataResults", Value::Array(results)),
                    ("Messages", Value::Array(Vec::new())),
                ]),
            )
        }
        other => error(
            "InvalidAction",
            &format!("{other} is not served by this stand-in"),
        ),
    }
}

impl CloudWatchFake {
    /// Start it.
    pub fn start() -> CloudWatchFake {
        let data: Arc<Mutex<Vec<Datum>>> = Arc::default();
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let (d, c) = (Arc::clone(&data), Arc::clone(&calls));
        let server = MockServer::start(Arc::new(move |req: Req| {
            let Some(op) = req.path.strip_prefix(PREFIX) else {
                return error("UnknownOperationException", &req.path);
            };
            if req.header("smithy-protocol") != Some("rpc-v2-cbor") {
                return error(
                    "ValidationException",
                    "smithy-protocol: rpc-v2-cbor expected",
                );
            }
            let body: Value = if req.body.is_empty() {
                Value::Map(Vec::new())
            } else {
                match ciborium::from_reader(req.body.as_slice()) {
                    Ok(v) => v,
                    Err(e) => return error("SerializationException", &e.to_string()),
                }
            };
            c.lock().unwrap().push(op.to_string());
            answer(&d.lock().unwrap(), op, &body)
        }));
        CloudWatchFake {
            server,
            data,
            calls,
        }
    }

    /// Where it listens (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Put datapoints, as an agent's PutMetricData would.
    pub fn put(&self, data: impl IntoIterator<Item = Datum>) {
        self.data.lock().unwrap().extend(data);
    }
}
