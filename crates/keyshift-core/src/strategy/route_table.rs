//! STUB: helper D replaces this.
/// Route table. STUB.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {}
