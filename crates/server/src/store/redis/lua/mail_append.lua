-- KEYS and ARGV: one message (mail.lua's mail_at).
return append_mail(mail_at(1, 1))
