//! The tracing layer and its filter: each event formatted as one line and
//! sent to every listener.

use super::*;

/// What [`layer`] should see: events at INFO and above, while a listener
/// is there. Tracing caches this per call site, and the cache is rebuilt
/// when the first listener arrives or the last one leaves: without a
/// listener (and with the other layers quieter than INFO) a request costs
/// no span and no event at all, not even a check. Spans are never asked
/// for (the channel sends events only).
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// use tracing_subscriber::Layer;
/// let subscriber = tracing_subscriber::registry()
///     .with(kallithea_trace::layer().with_filter(kallithea_trace::filter()));
/// # drop(subscriber);
/// ```
pub fn filter<S: Subscriber>() -> impl tracing_subscriber::layer::Filter<S> + Send + Sync + 'static
{
    fn wanted(meta: &tracing::Metadata<'_>) -> bool {
        !meta.is_span() && *meta.level() <= tracing::Level::INFO && listening()
    }
    tracing_subscriber::filter::dynamic_filter_fn(|meta, _| wanted(meta)).with_callsite_filter(
        |meta| {
            if wanted(meta) {
                tracing::subscriber::Interest::always()
            } else {
                tracing::subscriber::Interest::never()
            }
        },
    )
}

/// The tracing layer that sends every event to the listeners (pair it with
/// [`filter`]).
pub fn layer<S: Subscriber>() -> impl Layer<S> + Send + Sync + 'static {
    watch();
    TraceLayer
}

pub(crate) struct TraceLayer;

impl<S: Subscriber> Layer<S> for TraceLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !ACTIVE.load(Ordering::Relaxed) {
            return;
        }
        let meta = event.metadata();
        let mut line = header(meta.level().as_str(), meta.target());
        let mut v = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut v);
        line.push_str(&v.message);
        line.push_str(&v.rest);
        send(&line);
    }
}

/// `time pid process LEVEL target: `
pub(crate) fn header(level: &str, target: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{}.{:03} {} {} {level} {target}: ",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id(),
        process_name()
    );
    s
}

pub(crate) fn process_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "?".into())
    })
}

pub(crate) struct Fields {
    pub(crate) message: String,
    pub(crate) rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if value.contains('\n') {
            let _ = write!(self.rest, "\n  {}:\n{}", field.name(), value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let text = format!("{value:?}");
            if text.contains('\n') {
                let _ = write!(self.rest, "\n  {}:\n{}", field.name(), text);
            } else {
                let _ = write!(self.rest, " {}={text}", field.name());
            }
        }
    }
}

/// Sends one event to every listener, without blocking.
pub(crate) fn send(line: &str) {
    imp::send(line);
}
