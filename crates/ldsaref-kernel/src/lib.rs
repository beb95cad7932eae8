//! Kernel facts for ldsaref: the only code that knows option numbers,
//! mark encodings and control-message layouts.
//!
//! Everything here is shared by the preload library and the `ldsaref`
//! command, so that `ldsaref explain` and `ldsaref probe` describe exactly
//! what the library does.
//!
//! - [`opts`]: option numbers (`IP_IPSEC_BINDREF`, `IP_IPSEC_REFINFO`, in
//!   both ABIs; `SO_MARK`, `SO_RCVMARK`, `SO_BINDTODEVICE`) and the mast
//!   nfmark encoding.
//! - [`cmsg`]: pure, bounds-checked reading and writing of control-message
//!   buffers (no pointers, no `unsafe`).
//! - [`op`]: the kernel operation a rule's action turns into, per mode and
//!   per kind of socket, with a human description for `explain` and logs.
//! - [`probe`]: what this kernel and these privileges support.
//! - [`mapped`]: the compiled rules index, mapped read-only.
//! - [`xfrm`]: outbound XFRM block policies over netlink (`ldsaref updown`).
//! - [`nftables`]: the names of a table's chains over netlink (`ldsaref
//!   apply` reads its fingerprints there).
//! - [`nft_batch`]: a table's set elements and empty chains changed over
//!   netlink in one transaction (`ldsaref apply` replaces a section's
//!   elements there).
//! - [`link`]: the xfrm interface with a given `if_id`, over netlink
//!   (`ldsaref updown`).
//! - [`netlink`]: the socket and framing those share.

pub mod cmsg;
pub mod link;
pub mod mapped;
pub mod netlink;
pub mod nft_batch;
pub mod nftables;
pub mod op;
pub mod opts;
pub mod probe;
pub mod xfrm;
