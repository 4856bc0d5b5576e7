-- Statistics count new members per day, week or month from the cards' creation
-- time: an index so a bounded range reads only its own cards.
CREATE INDEX IF NOT EXISTS cards_created ON loyalty.cards(created_at);
