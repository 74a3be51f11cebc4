"""Word knowledge (opposites) and the word lists the story, puzzle and bias generators draw from."""

OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("up", "down"),
    ("open", "closed"), ("light", "dark"), ("early", "late"), ("full", "empty"), ("hard", "soft"),
    ("high", "low"), ("long", "short"), ("wet", "dry"), ("young", "old"), ("rich", "poor"),
    ("strong", "weak"), ("thick", "thin"), ("heavy", "light"), ("loud", "quiet"), ("clean", "dirty"),
    ("cheap", "expensive"), ("near", "far"), ("inside", "outside"), ("above", "below"), ("begin", "end"),
    ("buy", "sell"), ("give", "take"), ("win", "lose"), ("push", "pull"), ("arrive", "leave"),
    ("accept", "refuse"), ("remember", "forget"), ("laugh", "cry"), ("sink", "float"), ("teach", "learn"),
    ("question", "answer"), ("friend", "enemy"), ("day", "night"), ("summer", "winter"), ("north", "south"),
    ("east", "west"), ("left", "right"), ("true", "false"), ("always", "never"), ("before", "after"),
    ("first", "last"), ("top", "bottom"), ("front", "back"), ("entrance", "exit"), ("success", "failure"),
    ("brave", "afraid"), ("polite", "rude"), ("sweet", "sour"), ("smooth", "rough"), ("sharp", "blunt"),
    ("wide", "narrow"), ("deep", "shallow"), ("tight", "loose"), ("safe", "dangerous"), ("easy", "difficult"),
    ("asleep", "awake"), ("alive", "dead"), ("present", "absent"), ("public", "private"), ("major", "minor"),
    ("maximum", "minimum"), ("ancient", "modern"), ("frequent", "rare"), ("generous", "selfish"),
    ("guilty", "innocent"), ("visible", "invisible"), ("possible", "impossible"), ("increase", "decrease"),
    ("include", "exclude"), ("import", "export"), ("attack", "defend"), ("borrow", "lend"), ("freeze", "melt"),
    ("whisper", "shout"), ("rise", "fall"), ("expand", "shrink"), ("wild", "tame"),
    ("raw", "cooked"), ("fresh", "stale"), ("noisy", "silent"), ("simple", "complex"), ("victory", "defeat"),
    ("peace", "war"), ("love", "hate"), ("beautiful", "ugly"), ("clever", "foolish"), ("calm", "angry"),
    ("dull", "bright"), ("single", "married"), ("vertical", "horizontal"), ("minus", "plus"),
    ("sunrise", "sunset"), ("fat", "lean"), ("seldom", "often"), ("giant", "dwarf"),
]

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack", "Kate", "Leo",
         "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tina", "Omar", "Lena", "Ravi", "Yuki", "Zara",
         "Tom", "Nora", "Max", "Ella", "Ali", "Sofia", "Ivan", "Maya"]
PLACES = ["market", "library", "park", "beach", "museum", "zoo", "bakery", "farm", "station", "river",
          "garden", "school", "cinema", "harbour", "forest", "castle", "lake", "stadium", "hospital", "village"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ITEMS = ["apples", "bread", "flowers", "a book", "a kite", "shoes", "a hat", "cheese", "a map", "stamps",
         "a lamp", "candles", "a clock", "tea", "paint", "a ball", "rice", "a scarf", "eggs", "a cake"]
COMPANIONS = ["a brother", "a sister", "a friend", "a cousin", "a colleague", "a neighbour",
              "an aunt", "an uncle", "a classmate", "a grandmother"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple", "brown", "grey"]
TRANSPORT = ["bus", "train", "bike", "car", "boat", "tram"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "snowy", "foggy", "cloudy"]
PETS = ["dog", "cat", "rabbit", "parrot", "hamster", "turtle", "goldfish", "pony"]
JOBS = ["teacher", "doctor", "farmer", "baker", "pilot", "painter", "nurse", "driver", "chef", "writer"]
COUNTABLE = ["apples", "pencils", "books", "coins", "stickers", "marbles", "cookies", "cards", "shells",
             "stamps", "eggs", "flowers", "buttons", "toys", "candles", "oranges"]
