//! What the XDP programs of both objects share: bounds-checked access to the frame.
#![no_std]
// Everything is inlined into the programs on purpose: the verifier follows one function,
// and BPF-to-BPF calls would cost more than they save here.
#![allow(clippy::inline_always)]

pub mod packet;
