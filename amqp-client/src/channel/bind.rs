//! Bindings: exchange-to-exchange and queue bindings and their removal. Arguments and the
//! no-wait flag come in [`BindOptions`].

use amqp_codec::Method;
use amqp_codec::methods::{ExchangeBind, ExchangeUnbind, QueueBind, QueueUnbind};

use super::Channel;
use crate::error::Error;
use crate::names::IntoShortStr;
use crate::options::BindOptions;

impl Channel {
    /// Binds exchange `destination` to exchange `source` (RabbitMQ's exchange-to-exchange
    /// bindings): what `source` routes with `routing_key` goes on to `destination`.
    pub async fn exchange_bind(
        &self,
        destination: impl IntoShortStr,
        source: impl IntoShortStr,
        routing_key: impl IntoShortStr,
        options: BindOptions,
    ) -> Result<(), Error> {
        let method = Method::ExchangeBind(ExchangeBind {
            ticket: 0,
            destination: destination.into_short_str()?,
            source: source.into_short_str()?,
            routing_key: routing_key.into_short_str()?,
            nowait: options.nowait,
            arguments: options.arguments,
        });
        self.call_or_send(method, options.nowait).await
    }

    /// Removes an exchange-to-exchange binding.
    pub async fn exchange_unbind(
        &self,
        destination: impl IntoShortStr,
        source: impl IntoShortStr,
        routing_key: impl IntoShortStr,
        options: BindOptions,
    ) -> Result<(), Error> {
        let method = Method::ExchangeUnbind(ExchangeUnbind {
            ticket: 0,
            destination: destination.into_short_str()?,
            source: source.into_short_str()?,
            routing_key: routing_key.into_short_str()?,
            nowait: options.nowait,
            arguments: options.arguments,
        });
        self.call_or_send(method, options.nowait).await
    }

    /// Binds `queue` to `exchange`: what the exchange routes with `routing_key` (or, for a
    /// headers exchange, matches the options' arguments) goes to the queue.
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_client::Channel) -> Result<(), amqp_client::Error> {
    /// use amqp_client::BindOptions;
    /// channel.queue_bind("thumbnails", "uploads", "image.*", BindOptions::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn queue_bind(
        &self,
        queue: impl IntoShortStr,
        exchange: impl IntoShortStr,
        routing_key: impl IntoShortStr,
        options: BindOptions,
    ) -> Result<(), Error> {
        let method = Method::QueueBind(QueueBind {
            ticket: 0,
            queue: queue.into_short_str()?,
            exchange: exchange.into_short_str()?,
            routing_key: routing_key.into_short_str()?,
            nowait: options.nowait,
            arguments: options.arguments,
        });
        self.call_or_send(method, options.nowait).await
    }

    /// Removes a queue binding (queue.unbind has no no-wait form: it always waits for
    /// unbind-ok).
    pub async fn queue_unbind(
        &self,
        queue: impl IntoShortStr,
        exchange: impl IntoShortStr,
        routing_key: impl IntoShortStr,
        options: BindOptions,
    ) -> Result<(), Error> {
        let method = Method::QueueUnbind(QueueUnbind {
            ticket: 0,
            queue: queue.into_short_str()?,
            exchange: exchange.into_short_str()?,
            routing_key: routing_key.into_short_str()?,
            arguments: options.arguments,
        });
        self.call(method).await.map(drop)
    }
}
