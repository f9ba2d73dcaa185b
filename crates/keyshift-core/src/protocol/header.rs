//! STUB: helper C replaces this.
/// Name of the record header that marks a fence.
pub const FENCE_HEADER: &str = "keyshift-fence";
/// Name of the record header that carries a route.
pub const ROUTE_HEADER: &str = "keyshift-route";
/// STUB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteHeader {}
/// STUB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceHeader {}
/// STUB.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stub")]
pub struct HeaderError {}
