//! The method table: every class, method and argument of AMQP 0-9-1 as RabbitMQ speaks it.
//!
//! Row syntax: `id StructName "spec-name" (direction, flags) => Replies { field: Type, ... }`.
//! `sync` marks requests that expect one of the replies; `content` marks methods followed by a
//! content header and body. A field's spec name is its Rust name with `-` for `_`, unless given
//! in parentheses. Types: `u8` octet, `u16` short, `u32` long, `u64` longlong, `bool` bit (packed),
//! `ShortStr`, `LongStr`, `FieldTable`.

use super::{Direction, FieldInfo, MethodInfo, amqp_methods, has_flag};
use crate::constants::ClassId;
use crate::read::args::Reader;
use crate::strings::{LongStr, ShortStr};
use crate::table::FieldTable;

amqp_methods! {
    /// Connection negotiation and control.
    class "connection" = 10 {
        /// Server's opening: protocol version, properties, SASL mechanisms and locales.
        10 ConnectionStart "start" (ToClient, sync) => ConnectionStartOk {
            /// Protocol major version (0).
            version_major: u8,
            /// Protocol minor version (9).
            version_minor: u8,
            /// Server product, version, platform and `capabilities` table.
            server_properties: FieldTable,
            /// Space-separated SASL mechanisms, e.g. `PLAIN AMQPLAIN`.
            mechanisms: LongStr,
            /// Space-separated message locales.
            locales: LongStr,
        }
        /// Client's answer: its properties, the chosen mechanism and the SASL response.
        11 ConnectionStartOk "start-ok" (ToServer) {
            /// Client product, version, platform, connection name and `capabilities` table.
            client_properties: FieldTable,
            /// The chosen SASL mechanism.
            mechanism: ShortStr,
            /// The SASL response (for PLAIN: `\0user\0password`).
            response: LongStr,
            /// The chosen locale.
            locale: ShortStr,
        }
        /// A further SASL challenge.
        20 ConnectionSecure "secure" (ToClient, sync) => ConnectionSecureOk {
            /// The challenge data.
            challenge: LongStr,
        }
        /// The answer to a SASL challenge.
        21 ConnectionSecureOk "secure-ok" (ToServer) {
            /// The response data.
            response: LongStr,
        }
        /// Server's proposed limits.
        30 ConnectionTune "tune" (ToClient, sync) => ConnectionTuneOk {
            /// Highest channel number the server allows (0: no limit).
            channel_max: u16,
            /// Largest frame the server accepts (0: no limit).
            frame_max: u32,
            /// Heartbeat interval in seconds the server wants (0: none).
            heartbeat: u16,
        }
        /// Client's chosen limits.
        31 ConnectionTuneOk "tune-ok" (ToServer) {
            /// Negotiated highest channel number.
            channel_max: u16,
            /// Negotiated largest frame.
            frame_max: u32,
            /// Negotiated heartbeat interval in seconds.
            heartbeat: u16,
        }
        /// Opens a virtual host.
        40 ConnectionOpen "open" (ToServer, sync) => ConnectionOpenOk {
            /// The virtual host name.
            virtual_host: ShortStr,
            /// Reserved, must be empty.
            capabilities: ShortStr,
            /// Reserved, must be false.
            insist: bool,
        }
        /// The virtual host is open.
        41 ConnectionOpenOk "open-ok" (ToClient) {
            /// Reserved, empty.
            known_hosts: ShortStr,
        }
        /// Closes the connection, with the reason.
        50 ConnectionClose "close" (Both, sync) => ConnectionCloseOk {
            /// Why: a reply code.
            reply_code: u16,
            /// Why: human-readable text.
            reply_text: ShortStr,
            /// The class of the method that caused the close, or 0.
            class_id: u16,
            /// The method that caused the close, or 0.
            method_id: u16,
        }
        /// Confirms a close; the sender may drop the socket.
        51 ConnectionCloseOk "close-ok" (Both) {}
        /// RabbitMQ: the broker stopped reading from publishers (resource alarm).
        60 ConnectionBlocked "blocked" (Both) {
            /// Why, e.g. `low on memory`.
            reason: ShortStr,
        }
        /// RabbitMQ: the broker reads from publishers again.
        61 ConnectionUnblocked "unblocked" (Both) {}
        /// RabbitMQ: replaces the credential (e.g. an OAuth token) of a live connection.
        70 ConnectionUpdateSecret "update-secret" (ToServer, sync) => ConnectionUpdateSecretOk {
            /// The new secret.
            new_secret: LongStr,
            /// Why it is updated.
            reason: ShortStr,
        }
        /// RabbitMQ: the secret was updated.
        71 ConnectionUpdateSecretOk "update-secret-ok" (ToClient) {}
    }

    /// Channel open, flow control and close.
    class "channel" = 20 {
        /// Opens a channel.
        10 ChannelOpen "open" (ToServer, sync) => ChannelOpenOk {
            /// Reserved, empty.
            out_of_band: ShortStr,
        }
        /// The channel is open.
        11 ChannelOpenOk "open-ok" (ToClient) {
            /// Reserved, empty.
            channel_id: LongStr,
        }
        /// Asks the peer to pause or resume sending content.
        20 ChannelFlow "flow" (Both, sync) => ChannelFlowOk {
            /// True to resume, false to pause.
            active: bool,
        }
        /// Confirms a flow change.
        21 ChannelFlowOk "flow-ok" (Both) {
            /// The flow state now in effect.
            active: bool,
        }
        /// Closes the channel, with the reason.
        40 ChannelClose "close" (Both, sync) => ChannelCloseOk {
            /// Why: a reply code.
            reply_code: u16,
            /// Why: human-readable text.
            reply_text: ShortStr,
            /// The class of the method that caused the close, or 0.
            class_id: u16,
            /// The method that caused the close, or 0.
            method_id: u16,
        }
        /// Confirms a channel close; the channel id may be reused.
        41 ChannelCloseOk "close-ok" (Both) {}
    }

    /// Access tickets: deprecated in 0-9-1, kept so that every method decodes.
    class "access" = 30 {
        /// Requests an access ticket (obsolete).
        10 AccessRequest "request" (ToServer, sync) => AccessRequestOk {
            /// Realm name.
            realm: ShortStr,
            /// Exclusive access.
            exclusive: bool,
            /// Passive access.
            passive: bool,
            /// Active access.
            active: bool,
            /// Write access.
            write: bool,
            /// Read access.
            read: bool,
        }
        /// Grants an access ticket (obsolete).
        11 AccessRequestOk "request-ok" (ToClient) {
            /// The ticket.
            ticket: u16,
        }
    }

    /// Exchanges.
    class "exchange" = 40 {
        /// Creates an exchange, or checks that it exists (passive).
        10 ExchangeDeclare "declare" (ToServer, sync) => ExchangeDeclareOk {
            /// Reserved, 0.
            ticket: u16,
            /// Exchange name.
            exchange: ShortStr,
            /// Exchange type: `direct`, `fanout`, `topic`, `headers`, or a plugin's.
            kind("type"): ShortStr,
            /// Only check that the exchange exists (404 if not).
            passive: bool,
            /// Survive a broker restart.
            durable: bool,
            /// Delete when the last binding is removed.
            auto_delete: bool,
            /// Only other exchanges may publish to it.
            internal: bool,
            /// Do not send declare-ok.
            nowait: bool,
            /// Extra arguments, e.g. `alternate-exchange`.
            arguments: FieldTable,
        }
        /// The exchange exists.
        11 ExchangeDeclareOk "declare-ok" (ToClient) {}
        /// Deletes an exchange.
        20 ExchangeDelete "delete" (ToServer, sync) => ExchangeDeleteOk {
            /// Reserved, 0.
            ticket: u16,
            /// Exchange name.
            exchange: ShortStr,
            /// Only delete if it has no bindings.
            if_unused: bool,
            /// Do not send delete-ok.
            nowait: bool,
        }
        /// The exchange was deleted.
        21 ExchangeDeleteOk "delete-ok" (ToClient) {}
        /// RabbitMQ: binds an exchange to an exchange.
        30 ExchangeBind "bind" (ToServer, sync) => ExchangeBindOk {
            /// Reserved, 0.
            ticket: u16,
            /// The exchange that receives the messages.
            destination: ShortStr,
            /// The exchange messages come from.
            source: ShortStr,
            /// Binding key.
            routing_key: ShortStr,
            /// Do not send bind-ok.
            nowait: bool,
            /// Binding arguments (e.g. for a headers exchange).
            arguments: FieldTable,
        }
        /// RabbitMQ: the exchange binding exists.
        31 ExchangeBindOk "bind-ok" (ToClient) {}
        /// RabbitMQ: removes an exchange-to-exchange binding.
        40 ExchangeUnbind "unbind" (ToServer, sync) => ExchangeUnbindOk {
            /// Reserved, 0.
            ticket: u16,
            /// The exchange that received the messages.
            destination: ShortStr,
            /// The exchange messages came from.
            source: ShortStr,
            /// Binding key.
            routing_key: ShortStr,
            /// Do not send unbind-ok.
            nowait: bool,
            /// Binding arguments.
            arguments: FieldTable,
        }
        /// RabbitMQ: the exchange binding was removed (id 51, not 41).
        51 ExchangeUnbindOk "unbind-ok" (ToClient) {}
    }

    /// Queues.
    class "queue" = 50 {
        /// Creates a queue, or checks that it exists (passive). An empty name asks the server
        /// to choose one.
        10 QueueDeclare "declare" (ToServer, sync) => QueueDeclareOk {
            /// Reserved, 0.
            ticket: u16,
            /// Queue name; empty for a server-named queue.
            queue: ShortStr,
            /// Only check that the queue exists (404 if not).
            passive: bool,
            /// Survive a broker restart.
            durable: bool,
            /// Owned by this connection, deleted when it closes.
            exclusive: bool,
            /// Delete when the last consumer is cancelled.
            auto_delete: bool,
            /// Do not send declare-ok.
            nowait: bool,
            /// Extra arguments: `x-queue-type`, `x-message-ttl`, `x-dead-letter-exchange`, ...
            arguments: FieldTable,
        }
        /// The queue exists; its name and counts.
        11 QueueDeclareOk "declare-ok" (ToClient) {
            /// The queue's name (chosen by the server for a server-named queue).
            queue: ShortStr,
            /// Messages ready in the queue.
            message_count: u32,
            /// Consumers on the queue.
            consumer_count: u32,
        }
        /// Binds a queue to an exchange.
        20 QueueBind "bind" (ToServer, sync) => QueueBindOk {
            /// Reserved, 0.
            ticket: u16,
            /// Queue name.
            queue: ShortStr,
            /// Exchange name.
            exchange: ShortStr,
            /// Binding key.
            routing_key: ShortStr,
            /// Do not send bind-ok.
            nowait: bool,
            /// Binding arguments (e.g. for a headers exchange).
            arguments: FieldTable,
        }
        /// The binding exists.
        21 QueueBindOk "bind-ok" (ToClient) {}
        /// Removes all ready messages from a queue.
        30 QueuePurge "purge" (ToServer, sync) => QueuePurgeOk {
            /// Reserved, 0.
            ticket: u16,
            /// Queue name.
            queue: ShortStr,
            /// Do not send purge-ok.
            nowait: bool,
        }
        /// The queue was purged.
        31 QueuePurgeOk "purge-ok" (ToClient) {
            /// Messages removed.
            message_count: u32,
        }
        /// Deletes a queue.
        40 QueueDelete "delete" (ToServer, sync) => QueueDeleteOk {
            /// Reserved, 0.
            ticket: u16,
            /// Queue name.
            queue: ShortStr,
            /// Only delete if it has no consumers.
            if_unused: bool,
            /// Only delete if it has no messages.
            if_empty: bool,
            /// Do not send delete-ok.
            nowait: bool,
        }
        /// The queue was deleted.
        41 QueueDeleteOk "delete-ok" (ToClient) {
            /// Messages deleted with it.
            message_count: u32,
        }
        /// Removes a queue binding.
        50 QueueUnbind "unbind" (ToServer, sync) => QueueUnbindOk {
            /// Reserved, 0.
            ticket: u16,
            /// Queue name.
            queue: ShortStr,
            /// Exchange name.
            exchange: ShortStr,
            /// Binding key.
            routing_key: ShortStr,
            /// Binding arguments.
            arguments: FieldTable,
        }
        /// The binding was removed.
        51 QueueUnbindOk "unbind-ok" (ToClient) {}
    }

    /// Messages: publish, consume, get, acknowledge.
    class "basic" = 60 {
        /// Limits unacknowledged deliveries (prefetch).
        10 BasicQos "qos" (ToServer, sync) => BasicQosOk {
            /// Byte limit (RabbitMQ supports only 0, no limit).
            prefetch_size: u32,
            /// Message limit (0: no limit).
            prefetch_count: u16,
            /// RabbitMQ: true applies to the channel, false to each new consumer.
            global: bool,
        }
        /// The limit is in effect.
        11 BasicQosOk "qos-ok" (ToClient) {}
        /// Starts a consumer on a queue.
        20 BasicConsume "consume" (ToServer, sync) => BasicConsumeOk {
            /// Reserved, 0.
            ticket: u16,
            /// Queue name.
            queue: ShortStr,
            /// Consumer tag; empty asks the server to choose one.
            consumer_tag: ShortStr,
            /// Do not deliver messages published on this connection (RabbitMQ ignores it).
            no_local: bool,
            /// Deliveries need no acknowledgement (auto-ack).
            no_ack: bool,
            /// The only consumer of the queue.
            exclusive: bool,
            /// Do not send consume-ok.
            nowait: bool,
            /// Consumer arguments, e.g. `x-priority`.
            arguments: FieldTable,
        }
        /// The consumer is running.
        21 BasicConsumeOk "consume-ok" (ToClient) {
            /// The consumer's tag.
            consumer_tag: ShortStr,
        }
        /// Cancels a consumer (RabbitMQ also sends it when the queue is deleted).
        30 BasicCancel "cancel" (Both, sync) => BasicCancelOk {
            /// The consumer's tag.
            consumer_tag: ShortStr,
            /// Do not send cancel-ok.
            nowait: bool,
        }
        /// The consumer was cancelled.
        31 BasicCancelOk "cancel-ok" (Both) {
            /// The consumer's tag.
            consumer_tag: ShortStr,
        }
        /// Publishes a message; a content header and body follow.
        40 BasicPublish "publish" (ToServer, content) {
            /// Reserved, 0.
            ticket: u16,
            /// Exchange name; empty for the default exchange.
            exchange: ShortStr,
            /// Routing key.
            routing_key: ShortStr,
            /// Return the message if no queue takes it (basic.return, 312).
            mandatory: bool,
            /// Not supported by RabbitMQ 3.x (closes the connection with 540).
            immediate: bool,
        }
        /// Returns an unroutable mandatory message; a content header and body follow.
        50 BasicReturn "return" (ToClient, content) {
            /// Why, e.g. 312 NO_ROUTE.
            reply_code: u16,
            /// Why, as text.
            reply_text: ShortStr,
            /// The exchange it was published to.
            exchange: ShortStr,
            /// The routing key it was published with.
            routing_key: ShortStr,
        }
        /// Delivers a message to a consumer; a content header and body follow.
        60 BasicDeliver "deliver" (ToClient, content) {
            /// The consumer's tag.
            consumer_tag: ShortStr,
            /// The channel-scoped tag to acknowledge it with.
            delivery_tag: u64,
            /// True if it was delivered before and not acknowledged.
            redelivered: bool,
            /// The exchange it was published to.
            exchange: ShortStr,
            /// The routing key it was published with.
            routing_key: ShortStr,
        }
        /// Fetches one message synchronously.
        70 BasicGet "get" (ToServer, sync) => BasicGetOk | BasicGetEmpty {
            /// Reserved, 0.
            ticket: u16,
            /// Queue name.
            queue: ShortStr,
            /// The message needs no acknowledgement.
            no_ack: bool,
        }
        /// A fetched message; a content header and body follow.
        71 BasicGetOk "get-ok" (ToClient, content) {
            /// The channel-scoped tag to acknowledge it with.
            delivery_tag: u64,
            /// True if it was delivered before and not acknowledged.
            redelivered: bool,
            /// The exchange it was published to.
            exchange: ShortStr,
            /// The routing key it was published with.
            routing_key: ShortStr,
            /// Messages still ready in the queue.
            message_count: u32,
        }
        /// The queue had no message to fetch.
        72 BasicGetEmpty "get-empty" (ToClient) {
            /// Reserved, empty.
            cluster_id: ShortStr,
        }
        /// Acknowledges deliveries; from the server, confirms publishes.
        80 BasicAck "ack" (Both) {
            /// The tag.
            delivery_tag: u64,
            /// Also every earlier unacknowledged tag.
            multiple: bool,
        }
        /// Rejects one delivery.
        90 BasicReject "reject" (ToServer) {
            /// The tag.
            delivery_tag: u64,
            /// Put it back in the queue rather than drop or dead-letter it.
            requeue: bool,
        }
        /// Redelivers unacknowledged messages, without a reply (deprecated).
        100 BasicRecoverAsync "recover-async" (ToServer) {
            /// Requeue rather than redeliver to the same consumer.
            requeue: bool,
        }
        /// Redelivers unacknowledged messages.
        110 BasicRecover "recover" (ToServer, sync) => BasicRecoverOk {
            /// Requeue rather than redeliver to the same consumer.
            requeue: bool,
        }
        /// The messages were recovered.
        111 BasicRecoverOk "recover-ok" (ToClient) {}
        /// RabbitMQ: rejects one or more deliveries; from the server, a negative confirm.
        120 BasicNack "nack" (Both) {
            /// The tag.
            delivery_tag: u64,
            /// Also every earlier unacknowledged tag.
            multiple: bool,
            /// Put them back in the queue rather than drop or dead-letter them.
            requeue: bool,
        }
    }

    /// RabbitMQ: publisher confirms.
    class "confirm" = 85 {
        /// Puts the channel in confirm mode.
        10 ConfirmSelect "select" (ToServer, sync) => ConfirmSelectOk {
            /// Do not send select-ok.
            nowait: bool,
        }
        /// The channel is in confirm mode.
        11 ConfirmSelectOk "select-ok" (ToClient) {}
    }

    /// Transactions.
    class "tx" = 90 {
        /// Puts the channel in transaction mode.
        10 TxSelect "select" (ToServer, sync) => TxSelectOk {}
        /// The channel is transactional.
        11 TxSelectOk "select-ok" (ToClient) {}
        /// Commits the current transaction.
        20 TxCommit "commit" (ToServer, sync) => TxCommitOk {}
        /// The transaction was committed.
        21 TxCommitOk "commit-ok" (ToClient) {}
        /// Abandons the current transaction.
        30 TxRollback "rollback" (ToServer, sync) => TxRollbackOk {}
        /// The transaction was rolled back.
        31 TxRollbackOk "rollback-ok" (ToClient) {}
    }
}
