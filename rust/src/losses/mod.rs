//! Metric-learning and contrastive loss kernels with on-line mining.
//!
//! The pair and triplet losses return per-anchor values and counts (the caller
//! forms mean / sum / weighted reductions) plus a small state (mined indices,
//! per-row log-sum-exp values: O(B·d + B) at most); their backward takes the
//! upstream gradient of each per-anchor value and recomputes distance or
//! similarity tiles of fixed rows instead of keeping any B×B matrix. Losses
//! over given index tuples cost O(T·d). Exponentials are always summed as
//! log-sum-exp, and the gradient of a Euclidean distance at 0 is taken as 0.

pub mod circle;
pub mod common;
pub mod contrastive;
pub mod dino;
pub mod lifted;
pub mod margin;
pub mod miners;
pub mod multimodal;
pub mod multisim;
pub mod pairsim;
pub mod proxies;
mod rowops;
pub mod supcon;
pub mod triplet;
pub mod neighbor_embedding;
pub mod uniformity;
pub mod xent;
mod xent_sym;

pub use circle::{circle_backward, circle_forward, circle_forward_backward, circle_pairs_backward, circle_pairs_forward, Circle};
pub use common::{Batch, Metric, Rows};
pub use dino::{dino_backward, dino_forward, Dino, DinoState};
pub use contrastive::{contrastive_backward, contrastive_forward, pair_tuple_backward, pair_tuple_forward};
pub use lifted::{lifted_backward, lifted_forward, LiftedState};
pub use margin::{margin_backward, margin_forward, margin_fused, margin_fused_weighted, Kind as MarginKind, MarginSoftmax, MarginState};
pub use miners::{
    mine_distance_weighted, mine_multi_similarity, mine_pair_margin, mine_triplet_margin, PairSets, TripletType,
};
pub use multimodal::{clip_backward, clip_forward, siglip_forward, siglip_forward_backward, ClipState, Pairs, SiglipOut};
pub use multisim::{
    multi_similarity_backward, multi_similarity_forward, multi_similarity_forward_backward, multi_similarity_pairs_backward,
    multi_similarity_pairs_forward, MultiSimilarity,
};
pub use pairsim::GivenPairs;
pub use proxies::{
    proxy_anchor_backward, proxy_anchor_forward, proxy_anchor_fused, proxy_anchor_loss, proxy_nca_backward, proxy_nca_forward,
    proxy_nca_fused, AnchorTerms,
    Proxies,
};
pub use triplet::{
    mine, triplet_backward, triplet_forward, triplet_tuple_backward, triplet_tuple_forward, Mining, TripletCfg, TripletOut,
};
pub use supcon::{supcon_backward, supcon_forward, supcon_forward_backward, SupCon};
pub use uniformity::{uniformity_forward, uniformity_forward_backward, Uniformity};
pub use xent::{xent_backward, xent_backward_rows, xent_forward, xent_forward_backward, xent_forward_rows, Mask, Xent};
pub mod redundancy;
pub use redundancy::{offdiag_sq, Path as RedundancyPath};
pub use neighbor_embedding::{neighbor_embedding_loss, NeKernel, NeNorm, NeighborEmbedding};
