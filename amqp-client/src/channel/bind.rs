//! Bindings: exchange-to-exchange and queue bindings, their removal, and the no-wait forms.

use amqp_codec::Method;
use amqp_codec::methods::{ExchangeBind, ExchangeUnbind, QueueBind, QueueUnbind};
use amqp_codec::table::FieldTable;

use super::Channel;
use crate::error::Error;
use crate::names::short;

impl Channel {
    /// Binds exchange `destination` to exchange `source` (RabbitMQ's exchange-to-exchange
    /// bindings).
    pub async fn exchange_bind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let method = exchange_bind(destination, source, routing_key, arguments, false)?;
        self.call(method).await.map(drop)
    }

    /// [`exchange_bind`](Self::exchange_bind) without waiting for bind-ok: sent in order
    /// with the channel's other requests; a failure closes the channel later.
    pub fn exchange_bind_nowait(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        self.send_nowait(exchange_bind(
            destination,
            source,
            routing_key,
            arguments,
            true,
        )?)
    }

    /// Removes an exchange-to-exchange binding.
    pub async fn exchange_unbind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let method = exchange_unbind(destination, source, routing_key, arguments, false)?;
        self.call(method).await.map(drop)
    }

    /// [`exchange_unbind`](Self::exchange_unbind) without waiting for unbind-ok.
    pub fn exchange_unbind_nowait(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        self.send_nowait(exchange_unbind(
            destination,
            source,
            routing_key,
            arguments,
            true,
        )?)
    }

    /// Binds a queue to an exchange.
    pub async fn queue_bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let method = queue_bind(queue, exchange, routing_key, arguments, false)?;
        self.call(method).await.map(drop)
    }

    /// [`queue_bind`](Self::queue_bind) without waiting for bind-ok: sent in order with the
    /// channel's other requests; a failure closes the channel later.
    pub fn queue_bind_nowait(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        self.send_nowait(queue_bind(queue, exchange, routing_key, arguments, true)?)
    }

    /// Removes a queue binding.
    pub async fn queue_unbind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let method = Method::QueueUnbind(QueueUnbind {
            ticket: 0,
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            arguments,
        });
        self.call(method).await.map(drop)
    }
}

/// exchange.bind from its arguments.
fn exchange_bind(
    destination: &str,
    source: &str,
    routing_key: &str,
    arguments: FieldTable,
    nowait: bool,
) -> Result<Method, Error> {
    Ok(Method::ExchangeBind(ExchangeBind {
        ticket: 0,
        destination: short(destination)?,
        source: short(source)?,
        routing_key: short(routing_key)?,
        nowait,
        arguments,
    }))
}

/// exchange.unbind from its arguments.
fn exchange_unbind(
    destination: &str,
    source: &str,
    routing_key: &str,
    arguments: FieldTable,
    nowait: bool,
) -> Result<Method, Error> {
    Ok(Method::ExchangeUnbind(ExchangeUnbind {
        ticket: 0,
        destination: short(destination)?,
        source: short(source)?,
        routing_key: short(routing_key)?,
        nowait,
        arguments,
    }))
}

/// queue.bind from its arguments.
fn queue_bind(
    queue: &str,
    exchange: &str,
    routing_key: &str,
    arguments: FieldTable,
    nowait: bool,
) -> Result<Method, Error> {
    Ok(Method::QueueBind(QueueBind {
        ticket: 0,
        queue: short(queue)?,
        exchange: short(exchange)?,
        routing_key: short(routing_key)?,
        nowait,
        arguments,
    }))
}
