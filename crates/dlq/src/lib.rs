//! A durable, bounded dead-letter queue with redrive
