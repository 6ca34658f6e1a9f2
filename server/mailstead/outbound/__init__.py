"""Sending mail: the queue runner (``queue``), routes (``mx``), the SMTP client
(``client``), bounces (``dsn``) and DKIM keys and signing (``dkim``)."""
