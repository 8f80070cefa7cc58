//! Hazard tickets (隐患闭环): found → dispatched → rectifying → rectified → verified → closed
//! (销号). [`machine`] is the pure state machine (which moves are allowed, what each needs);
//! [`store`] keeps tickets and their history in the embedded store and queues every change for
//! the external workflow system's webhook through the outbox.

pub mod machine;
pub mod store;
